from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp (see crosstrace/__init__.py)

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


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


def make_tiny_model_dir(path: Path, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """A tiny random Llama saved as an HF folder, with a small BPE tokenizer trained on Known prompts.

    Lets the tests run the whole workflow in seconds. It knows no facts, so workflow tests trace with
    ``filter.require_known: false``.
    """
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    prompts = [r["prompt"] + " " + r["attribute"] for r in json.loads((ROOT / "resources" / "known_1000.json").read_text())]
    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(prompts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<eos>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", pad_token="<eos>")
    model = tiny_llama(layers=layers, hidden=hidden, vocab=tk.get_vocab_size(), seed=seed)
    model.config.eos_token_id = model.config.pad_token_id = tok.eos_token_id
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = tok.eos_token_id
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is fastest and avoids contention on a loaded 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny random SpiritLM checkpoint tree in the real formats (tests/spiritlm_fixture.py)."""
    from spiritlm_fixture import build_tiny_spiritlm

    return build_tiny_spiritlm(tmp_path_factory.mktemp("spiritlm"))


@pytest.fixture(scope="session")
def qwen2audio_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2-Audio folder (model + processor) in the real format (tests/qwen2audio_fixture.py)."""
    from qwen2audio_fixture import build_tiny_qwen2audio

    return build_tiny_qwen2audio(tmp_path_factory.mktemp("qwen2audio") / "tiny-qwen2-audio")
