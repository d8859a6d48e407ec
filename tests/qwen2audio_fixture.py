"""A tiny random Qwen2-Audio folder in the real format: ``build_tiny_qwen2audio(path)``.

``Qwen2AudioForConditionalGeneration`` from a ``Qwen2AudioConfig`` (a 2-layer Whisper-style encoder of width 16
with the real input side: 128 mel bins, 1500 encoder positions = the 30 s window; a 4-layer Qwen2 LM of width
32), with transformers' own processor classes: ``Qwen2AudioProcessor`` over a ``WhisperFeatureExtractor``
(16 kHz, hop 160, 30 s) and a ``Qwen2Tokenizer`` built from a small byte-level BPE trained on the Known prompts,
with Qwen2-Audio's special tokens (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, ``<|AUDIO|>``,
``<|audio_bos|>``, ``<|audio_eos|>``). Saved with ``save_pretrained`` (model.safetensors, config.json,
processor_config.json, tokenizer.json, chat_template.jinja), so loaders read it as they read the real one.

Random and deterministic (fixed seed); the LM head is scaled so probabilities move visibly under corruption.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=1024, tie_word_embeddings=False)
AUDIO = dict(d_model=16, encoder_attention_heads=2, encoder_ffn_dim=32, encoder_layers=2, num_mel_bins=128,
             max_source_positions=1500)


def tiny_tokenizer(vocab_size: int = 500):
    """A ``Qwen2Tokenizer`` (Qwen2's own pre-tokenizer and byte-level BPE) from vocab and merges trained here."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    known = json.loads((ROOT / "resources" / "known_1000.json").read_text())
    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.train_from_iterator([r["prompt"] + " " + r["attribute"] for r in known],
                           trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe = json.loads(tk.to_str())["model"]
    tok = Qwen2Tokenizer(vocab=bpe["vocab"], merges=[tuple(m) for m in bpe["merges"]])
    tok.add_special_tokens({"additional_special_tokens": SPECIAL[1:]})
    return tok


def build_tiny_qwen2audio(path: str | Path, seed: int = 0, layers: int = 4) -> Path:
    """Write a tiny random Qwen2-Audio (model and processor) to ``path``; returns ``path``."""
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    path = Path(path)
    tok = tiny_tokenizer()
    processor = Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=AUDIO["num_mel_bins"]),
                                    tokenizer=tok)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    cfg = Qwen2AudioConfig(
        audio_config=AUDIO,
        text_config=dict(model_type="qwen2", vocab_size=len(tok), **{**TEXT, "num_hidden_layers": layers},
                         eos_token_id=eos, pad_token_id=eos),
        audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"),
    )
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = eos
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def tone_clip(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A deterministic stand-in for speech: a few tones under light noise, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    x = sum(0.2 * np.sin(2 * np.pi * f * t + p) for f, p in zip((180, 420, 1250), rng.uniform(0, 6, 3), strict=True))
    return (x + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
