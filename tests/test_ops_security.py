"""Checkpoints and data are never unpickled with arbitrary code: a static scan of src/ and scripts/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "scripts").glob("*.py")])

# Calls that can run code from a file or string.
FORBIDDEN_CALLS = {
    "eval", "exec", "compile", "__import__",
    "pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "cPickle.loads", "dill.load", "dill.loads",
    "marshal.load", "marshal.loads", "joblib.load", "shelve.open", "pd.read_pickle", "pandas.read_pickle",
    "torch.jit.load", "yaml.unsafe_load", "yaml.full_load",
}


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return "?"


def calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            yield node, dotted(node.func), {k.arg: k.value for k in node.keywords}


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{node.lineno}"


def kw_is(kw: dict, name: str, value) -> bool:
    return name in kw and isinstance(kw[name], ast.Constant) and kw[name].value is value


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_unsafe_deserialisation(path):
    problems = []
    for node, name, kw in calls(path):
        if name in FORBIDDEN_CALLS:
            problems.append(f"{where(path, node)}: {name}()")
        if name.endswith("torch.load") or name == "load" and "map_location" in kw:
            if not kw_is(kw, "weights_only", True):
                problems.append(f"{where(path, node)}: torch.load without weights_only=True")
        if name.endswith(("np.load", "numpy.load")) and not kw_is(kw, "allow_pickle", False) and "allow_pickle" in kw:
            problems.append(f"{where(path, node)}: np.load(allow_pickle=...)")
        if name.endswith("yaml.load") and not ("Loader" in kw and dotted(kw["Loader"]).endswith(("SafeLoader", "CSafeLoader"))):
            problems.append(f"{where(path, node)}: yaml.load without SafeLoader")
        if kw_is(kw, "weights_only", False):
            problems.append(f"{where(path, node)}: weights_only=False")
        if kw_is(kw, "trust_remote_code", True):
            problems.append(f"{where(path, node)}: trust_remote_code=True runs code from the model repository")
        is_model = name.endswith("from_pretrained") and ("Model" in name or "ForCausalLM" in name)
        if is_model and "gguf_file" not in kw and not kw_is(kw, "weights_only", True):
            problems.append(f"{where(path, node)}: model from_pretrained without weights_only=True")
        if name.endswith("from_pretrained") and kw_is(kw, "use_safetensors", False):
            problems.append(f"{where(path, node)}: from_pretrained(use_safetensors=False)")
    assert not problems, "\n".join(problems)


def test_checkpoint_loaders_are_weights_only():
    """The loaders that exist today: HuBERT/quantizer via torch.load(weights_only=True), SpiritLM via from_pretrained."""
    found = {(p.name, name) for p in FILES for _, name, kw in calls(p)
             if name.endswith("torch.load") and kw_is(kw, "weights_only", True)}
    assert ("hubert.py", "torch.load") in found


def test_scan_catches_unsafe_code(tmp_path):
    p = tmp_path / "bad.py"
    p.write_text("import pickle, torch\npickle.load(open('x','rb'))\ntorch.load('m.pt')\n"
                 "torch.load('m.pt', weights_only=False)\neval('1')\n")
    names = [(name, kw) for _, name, kw in calls(p)]
    assert ("pickle.load" in {n for n, _ in names}) and "eval" in {n for n, _ in names}
    assert sum(1 for n, kw in names if n == "torch.load" and not kw_is(kw, "weights_only", True)) == 2


def test_pinned_openai_whisper_loads_weights_only():
    """crosstrace.speech.asr loads Whisper checkpoints through whisper.load_model (openai-whisper==20250625)."""
    import inspect

    whisper = pytest.importorskip("whisper")
    src = inspect.getsource(whisper.load_model)
    assert '"weights_only": True' in src and "torch.load(fp, map_location=device, **kwargs)" in src
