from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
