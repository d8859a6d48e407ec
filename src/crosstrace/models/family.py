"""One loader for every model entry of the config: ``family: hf`` (any causal LM) or ``spiritlm``.

:func:`prepare` resolves an entry to a loadable path once (rule ``prepare_model``); :func:`load` loads it.
Everything that depends on the family's files lives here; what depends on the modality lives in
:mod:`crosstrace.modality`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..config import ModelSpec
from . import spiritlm as slm
from .loading import LoadedModel, ModelLoadError, load_model, own_memory, prepare_model

#: speech tokenizer files under a SpiritLM checkpoint root (docs/spiritlm.md, "Checkpoint layout")
HUBERT_FILES = (
    Path("speech_tokenizer") / "hubert_25hz" / "mhubert_base_25hz.pt",
    Path("speech_tokenizer") / "hubert_25hz" / "L11_quantizer_500.pt",
)


def check_spiritlm_root(root: str | Path, modalities: Sequence[str] = ("t2t",)) -> Path:
    """The SpiritLM LM folder; with ``s2t`` also the speech tokenizer files. Errors name expected paths."""
    root = Path(root).expanduser()
    if not root.exists():
        raise ModelLoadError(
            f"SpiritLM checkpoint root {root} does not exist; expected {root / slm.LM_SUBDIR} "
            "(the $SPIRITLM_CHECKPOINTS_DIR layout, see docs/paper-run.md)"
        )
    folder = slm.resolve_spiritlm_folder(root)
    if "s2t" in modalities:
        base = root if folder != root else root.parent.parent
        missing = [str(base / f) for f in HUBERT_FILES if not (base / f).is_file()]
        if missing:
            raise ModelLoadError(f"SpiritLM speech tokenizer file(s) missing (needed for s2t): {', '.join(missing)}")
    return folder


def prepare(spec: ModelSpec, cache_dir: str | Path | None = None) -> str:
    """A loadable path for the entry (HF: converted/cached folder or hub id; SpiritLM: the LM folder)."""
    if spec.spiritlm:
        return str(check_spiritlm_root(spec.path, spec.modalities))
    return prepare_model(spec.path, cache_dir)


def load(spec: ModelSpec) -> LoadedModel:
    """Load a prepared entry (``spec.resolved`` from :func:`prepare`, else ``spec.path``)."""
    if spec.spiritlm:
        lm = slm.load_spiritlm_bundle(spec.load_path, spec.device, spec.dtype, name=spec.name or "spiritlm")
        if lm.device.type == "cpu":
            own_memory(lm.model)
        return lm
    return load_model(spec.load_path, spec.device, spec.dtype, name=spec.name)


def speech_root(spec: ModelSpec) -> Path:
    """The SpiritLM checkpoint root (holding speech_tokenizer/) of a spiritlm entry."""
    root = Path(spec.path).expanduser()
    if (root / "config.json").exists():  # the LM folder itself was given
        root = root.parent.parent
    return root


__all__ = ["HUBERT_FILES", "check_spiritlm_root", "load", "prepare", "speech_root"]
