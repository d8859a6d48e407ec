"""One loader for every model entry of the config: ``family: hf`` (any causal LM) or a speech family.

:func:`prepare` resolves an entry to a loadable path once (rule ``prepare_model``); :func:`load` loads it.
``hf`` is handled here; every speech family (SpiritLM, Qwen2-Audio) is one module under ``crosstrace.models``
that implements the contract of :mod:`crosstrace.models.speech_family` and is found by its name. What depends
on the modality lives in :mod:`crosstrace.modality`.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ModelSpec
from .loading import LoadedModel, load_model, prepare_model
from .speech_family import speech_family
from .spiritlm import HUBERT_FILES, check_spiritlm_root, speech_root

HF = "hf"


def prepare(spec: ModelSpec, cache_dir: str | Path | None = None) -> str:
    """A loadable path for the entry (HF: converted/cached folder or hub id; a speech family: its own check,
    e.g. the SpiritLM LM folder)."""
    if spec.family == HF:
        return prepare_model(spec.path, cache_dir)
    return speech_family(spec.family).prepare(spec)


def load(spec: ModelSpec) -> LoadedModel:
    """Load a prepared entry (``spec.resolved`` from :func:`prepare`, else ``spec.path``)."""
    if spec.family == HF:
        return load_model(spec.load_path, spec.device, spec.dtype, name=spec.name)
    return speech_family(spec.family).load(spec)


__all__ = ["HUBERT_FILES", "check_spiritlm_root", "load", "prepare", "speech_root"]
