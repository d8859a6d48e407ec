"""Fixtures shared by the whole suite: tiny models, the tiny SpiritLM, real speech, and finished DAG runs.

Everything expensive is built once per test session (also under ``pytest -n``: see :func:`shared_build`) in
the session's temporary folder, and handed to tests read-only. tests/README.md lists the fixtures and says
when a test must copy one instead (:func:`copy_run`).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import traceback
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp (see crosstrace/__init__.py)

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Two threads at most (tiny models gain nothing from more); under pytest -n the workers share the cores.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // WORKERS)))


# ------------------------------------------------------------------ building once per session


def shared_build(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """``build(folder)`` once per test session, also when pytest-xdist runs the tests in several workers.

    Every worker of one session sees the same ``<session tmp>/shared/<name>`` (xdist gives each worker its
    own base temp folder below a common parent); a file lock makes the first caller build and the others
    wait for it. A build that failed is not retried by the next worker: it fails with the first one's error.
    With ``CROSSTRACE_TEST_SHARED=<folder>`` the builds go to that folder and later sessions reuse them
    (development only: delete the folder after changing what a fixture builds).
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    shared = root / "shared"
    if os.environ.get("CROSSTRACE_TEST_SHARED"):  # development: keep the builds and reuse them in later sessions
        shared = Path(os.environ["CROSSTRACE_TEST_SHARED"]).resolve()
    shared.mkdir(parents=True, exist_ok=True)
    folder, done, failed = shared / name, shared / f"{name}.done", shared / f"{name}.failed"
    from filelock import FileLock

    session = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid {os.getpid()}"  # the same in every worker
    with FileLock(str(shared / f"{name}.lock")):
        if failed.exists() and failed.read_text().split("\n", 1)[0] == session:
            pytest.fail(f"shared fixture {name!r} failed to build earlier in this session:\n{failed.read_text()}")
        if not done.exists():
            failed.unlink(missing_ok=True)
            shutil.rmtree(folder, ignore_errors=True)
            try:
                build(folder)
            except BaseException as e:
                failed.write_text(session + "\n" + "".join(traceback.format_exception(e))[-8000:])
                raise
            done.touch()
    return folder


def copy_run(run: Path, dest: Path) -> Path:
    """A private copy of a finished run at ``dest``, for a test that changes it (reruns, kills, deletions).
    Modification times are kept, so Snakemake sees the copy as complete as the original."""
    shutil.copytree(run, dest, symlinks=True, ignore=shutil.ignore_patterns("locks"))
    return dest


def file_states(folder: Path) -> dict[str, list[int]]:
    """Size and modification time of every file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): [p.stat().st_size, p.stat().st_mtime_ns]
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ the order of the tests


def pytest_collection_modifyitems(config, items):
    """DAG modules first, so that their runs start at once: under ``pytest -n 2 --dist loadscope
    --no-loadscope-reorder`` (make test) the workers take whole modules in this order: one worker builds the
    shared finished run (the module with most ``demo_run`` tests comes first), the other the runs of the slow
    modules that have their own, then the other ``demo_run`` modules, and the rest fill the gaps at the end.
    Within a module the order stays."""
    modules: dict[str, list] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)

    def uses_demo_run(m: str) -> int:
        return sum("demo_run" in getattr(i, "fixturenames", ()) for i in modules[m])

    first_demo = max(modules, key=uses_demo_run)

    def rank(m: str) -> tuple[int, int]:
        if uses_demo_run(m):
            return (0, 0) if m == first_demo else (2, 0)
        if all(i.get_closest_marker("slow") for i in modules[m]):  # a slow module: a DAG run of its own
            return (1, -len(modules[m]))
        return (3, 0)

    items[:] = [i for m in sorted(modules, key=rank) for i in modules[m]]  # sorted() is stable


# ------------------------------------------------------------------ tiny models


def tiny_llama(layers: int = 6, hidden: int = 32, vocab: int = 64, seed: int = 0, **kw):
    """A random Llama small enough to trace exhaustively with the plain algorithm."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        **kw,
    )
    model = LlamaForCausalLM(cfg).eval()
    # Random init gives near-uniform outputs; sharpen the head so probabilities move visibly.
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    return model


def tiny_gpt2(layers: int = 4, hidden: int = 32, vocab: int = 64, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=4, n_positions=128)
    return GPT2LMHeadModel(cfg).eval()


def greedy_tokens(model, ids: torch.Tensor, n: int) -> list[int]:
    """The model's ``n`` greedy next tokens after ``ids`` (1-d), one full forward pass per token: a likely
    answer, so that P[o] and its IEs are far from 0."""
    out: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            ext = torch.cat([ids, torch.tensor(out, dtype=ids.dtype)])
            out.append(int(model(input_ids=ext[None]).logits[0, -1].argmax()))
    return out


def known_bpe_tokenizer():
    """A 600-token byte-level BPE trained on the Known prompts (deterministic): a fresh copy of the one
    trained once per process."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(_known_bpe_json())


@functools.cache
def _known_bpe_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    prompts = [r["prompt"] + " " + r["attribute"] for r in json.loads((ROOT / "resources" / "known_1000.json").read_text())]
    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(prompts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<eos>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tk.to_str()


def make_tiny_model_dir(path: Path, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """A tiny random Llama saved as an HF folder, with a small BPE tokenizer trained on Known prompts.

    Lets the tests run the whole workflow in seconds. It knows no facts, so workflow tests trace with
    ``filter.require_known: false``. Tests that only read the folder take the session's copy instead
    (fixtures ``tiny_model_dir`` and ``tiny_model_dirs``).
    """
    from transformers import PreTrainedTokenizerFast

    tk = known_bpe_tokenizer()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", pad_token="<eos>")
    model = tiny_llama(layers=layers, hidden=hidden, vocab=tk.get_vocab_size(), seed=seed)
    model.config.eos_token_id = model.config.pad_token_id = tok.eos_token_id
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = tok.eos_token_id
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> Callable[..., Path]:
    """``get(layers=2, hidden=32, seed=0)``: the folder of that tiny model (make_tiny_model_dir), built once
    per session and shared read-only; copy it before changing a file in it."""

    def get(layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
        name = f"tiny-llama-l{layers}-h{hidden}-s{seed}"
        return shared_build(tmp_path_factory, name, lambda d: make_tiny_model_dir(d, layers, hidden, seed))

    return get


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model_dirs) -> Path:
    """The workflow tests' tiny model (2 layers, seed 0) as an HF folder, shared read-only."""
    return tiny_model_dirs()


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """Model conversions are cached per user (like a real run) so the suite converts SmolLM2 once."""
    d = Path(os.environ.get("CROSSTRACE_CACHE", Path.home() / ".cache" / "crosstrace"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def smollm(cache_dir):
    from crosstrace.models.loading import OFFLINE_DEFAULT, load_model

    return load_model(OFFLINE_DEFAULT, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is fastest and avoids contention on a loaded 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> dict[str, Path]:
    """A tiny random SpiritLM checkpoint tree in the real formats (tests/spiritlm_fixture.py), shared
    read-only: {"root", "lm", "tokenizer_model", "hubert", "quantizer"}."""
    from spiritlm_fixture import build_tiny_spiritlm, tiny_spiritlm_paths

    return tiny_spiritlm_paths(shared_build(tmp_path_factory, "spiritlm", build_tiny_spiritlm))


# ------------------------------------------------------------------ figures


def assert_drawn_inside(fig) -> None:
    """Everything drawn on a matplotlib figure (titles, labels, colour bars) lies inside its canvas: nothing is
    clipped."""
    fig.draw_without_rendering()
    bb, (w, h) = fig.get_tightbbox(), fig.get_size_inches()
    assert bb.x0 >= -0.01 and bb.y0 >= -0.01 and bb.x1 <= w + 0.01 and bb.y1 <= h + 0.01, (bb, w, h)


# ------------------------------------------------------------------ real speech (piper, Whisper base)


@pytest.fixture(scope="session")
def piper():
    """The piper TTS backend with the bundled voice (skips where piper is not installed)."""
    pytest.importorskip("piper")
    from crosstrace.speech.tts import get_backend

    return get_backend("piper")


@pytest.fixture(scope="session")
def spoken(piper) -> Callable[[str], object]:
    """``spoken(text)``: piper's Synth of ``text``, synthesised once per session and text (read-only)."""
    return functools.cache(piper.synthesize)


@pytest.fixture(scope="session")
def whisper_base():
    """The offline Whisper base model through faster-whisper, int8 on 2 CPU threads (the workflow's setting)."""
    pytest.importorskip("faster_whisper")
    from crosstrace.models.loading import default_cache_dir
    from crosstrace.speech.asr import WhisperASR

    return WhisperASR(cache_dir=default_cache_dir(), compute_type="int8", cpu_threads=2)


# ------------------------------------------------------------------ finished DAG runs


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, tiny_model_dir, ckpt) -> Path:
    """One finished demo-shaped run of the real Snakefile (workflow_run.demo_run_config: config.yaml's
    settings with the tiny Llama "tiny" and the tiny SpiritLM "spirit", T→T and S→T, real piper + Whisper
    speech, a comparison and the similarity) and its ``report.html``; ``console.txt`` holds the run's console.

    Shared by every test that inspects its outputs, so no test may change it: the session fails at the end
    if a file under results/ changed. Dry runs against it are fine (with a config file of the test's own); a
    test that reruns, kills or deletes anything works on ``copy_run(demo_run, tmp_path / "run")``.
    """
    from workflow_run import demo_run_config, run_to_completion, write_config

    def build(d: Path) -> None:
        d.mkdir(parents=True)
        write_config(d / "config.yaml", demo_run_config(tiny_model_dir, ckpt["root"]))
        r = run_to_completion(d, "--cores", "2")
        (d / "console.txt").write_text(r.stderr)
        run_to_completion(d, "--report", str(d / "report.html"))
        (d / "results.json").write_text(json.dumps(file_states(d / "results")))

    run = shared_build(tmp_path_factory, "demo-run", build)
    yield run
    built = json.loads((run / "results.json").read_text())
    now = file_states(run / "results")
    changed = sorted(k for k in built.keys() | now.keys() if built.get(k) != now.get(k))
    assert not changed, f"a test changed the shared demo_run (work on copy_run(demo_run, ...) instead): {changed[:20]}"


@pytest.fixture(scope="session")
def qwen2audio_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2-Audio folder (model + processor) in the real format (tests/qwen2audio_fixture.py),
    shared read-only."""
    from qwen2audio_fixture import build_tiny_qwen2audio

    return shared_build(tmp_path_factory, "qwen2audio", lambda d: build_tiny_qwen2audio(d / "tiny-qwen2-audio")) / "tiny-qwen2-audio"
