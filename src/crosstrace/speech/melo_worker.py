"""MeloTTS in its own Python environment, for the ``melotts`` TTS backend (``speech.tts.options.python``).

MeloTTS cannot share crosstrace's environment: ``melo.api`` imports torchaudio, which has no wheel for the
pinned torch, and its requirements pin transformers 4.27 and librosa 0.9 (numpy < 2). So it lives in a
venv of its own (docs/paper-run.md), and :class:`crosstrace.speech.tts.MeloBackend` runs this file with that
venv's Python: ``python melo_worker.py``. It imports nothing from crosstrace, only melo and numpy.

Protocol: JSON lines. The first request ``{"language", "device", "config_path", "ckpt_path"}`` loads the voice
and is answered ``{"speakers": {name: id}, "sampling_rate": n}``; then each ``{"text", "speaker_id", "speed",
"seed", "out"}`` is synthesised with ``TTS.tts_to_file(text, speaker_id, None, speed=..., quiet=True)`` (which
returns float32 mono audio), saved with ``numpy.save`` to ``out`` and answered ``{"samples": n}``. A failure
is answered ``{"error": "..."}``; the worker goes on with the next request.
"""

import json
import sys


def main() -> int:
    protocol = sys.stdout
    sys.stdout = sys.stderr  # MeloTTS prints progress; the answers travel alone on the real stdout

    def answer(obj):
        protocol.write(json.dumps(obj) + "\n")
        protocol.flush()

    setup = json.loads(sys.stdin.readline() or "{}")
    try:
        import numpy as np
        from melo.api import TTS

        paths = {k: setup[k] for k in ("config_path", "ckpt_path") if setup.get(k)}
        tts = TTS(language=setup.get("language", "EN"), device=setup.get("device", "cpu"), **paths)
        speakers = tts.hps.data.spk2id
        answer({"speakers": {k: int(speakers[k]) for k in speakers.keys()},
                "sampling_rate": int(tts.hps.data.sampling_rate)})
    except Exception as e:  # noqa: BLE001 - reported to the backend, which raises TTSError
        answer({"error": f"{type(e).__name__}: {e}"})
        return 1
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req.get("seed") is not None:
                import torch

                torch.manual_seed(req["seed"])
            audio = tts.tts_to_file(req["text"], req["speaker_id"], None, speed=req["speed"], quiet=True)
            audio = np.asarray(audio, dtype=np.float32).reshape(-1)
            np.save(req["out"], audio)
            answer({"samples": int(audio.size)})
        except Exception as e:  # noqa: BLE001 - one prompt's failure; the backend quarantines it
            answer({"error": f"{type(e).__name__}: {e}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
