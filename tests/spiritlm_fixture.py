"""A tiny random SpiritLM checkpoint tree in the real on-disk formats (docs/spiritlm.md).

``build_tiny_spiritlm(root)`` writes, under ``root``::

    spiritlm_model/spirit-lm-base-7b/{config.json, generation_config.json, pytorch_model.bin,
                                      special_tokens_map.json, tokenizer_config.json, tokenizer.model}
    speech_tokenizer/hubert_25hz/mhubert_base_25hz.pt      (s3prl-style dict, fairseq key names)
    speech_tokenizer/hubert_25hz/L11_quantizer_500.pt      (dict: model_cfg + 5-module Sequential weights)

Everything is random and deterministic (fixed seeds). Nothing here is SpiritLM code or data.

tokenizer.model is a SentencePiece ``ModelProto`` built directly with ``sentencepiece_model_pb2`` (no
training): a BPE model with byte fallback whose ids match the real layout -- 0 ``<unk>``, 1 ``<s>``,
2 ``</s>``, 3..258 the byte pieces ``<0x00>``..``<0xFF>``, then normal pieces up to id 31999 (a few real
English words with all their prefixes so that BPE can build them, ``▁`` alone at id 29871 as in
Llama-2, single-character pieces, and single CJK/Hangul characters as filler that never merge), then the
user-defined pieces ``[Text]`` 32000, ``[Speech]`` 32001, ``[Hu0]``..``[Hu500]`` 32002..32502. The
embedding has 32512 rows as in the base model (32503..32511 are padding rows).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

LM_SUBDIR = Path("spiritlm_model") / "spirit-lm-base-7b"
HUBERT_SUBDIR = Path("speech_tokenizer") / "hubert_25hz"

# Tiny HuBERT: the real conv stack shape (kernels 10,3,3,3,3,2,2,2; strides 5,2,...; hop 640, R = 720)
# with 8 channels; 12 post-LN transformer layers of width 16 so that layer 11 exists.
TINY_CONV = "[(8,10,5)] + [(8,3,2)] * 4 + [(8,2,2)] * 3"
TINY_HUBERT = dict(dim=16, ffn=32, heads=2, layers=12, conv_pos=8, conv_pos_groups=4)
VOCAB_UNITS = 500
LM_VOCAB = 32512

WORDS = [
    "▁The", "▁the", "▁capital", "▁of", "▁France", "▁is", "▁Paris", "▁and", "▁they", "▁in", "▁city",
    "▁Rome", "▁Italy", "▁Apple", "▁was", "▁founded", "▁by", "▁Eiffel", "▁Tower", "▁located", "'s",
]
CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,'!?-:;()\"")
SPACE_ID = 29871  # "▁" alone, as in Llama-2


def _fairseq_cfg(conv_pos_batch_norm: bool, normalize: bool) -> tuple[dict, dict]:
    h = TINY_HUBERT
    model_cfg = {
        "_name": "hubert",
        "label_rate": 25.0,
        "extractor_mode": "default",
        "encoder_layers": h["layers"],
        "encoder_embed_dim": h["dim"],
        "encoder_ffn_embed_dim": h["ffn"],
        "encoder_attention_heads": h["heads"],
        "activation_fn": "gelu",
        "layer_type": "transformer",
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "encoder_layerdrop": 0.05,
        "dropout_input": 0.1,
        "dropout_features": 0.1,
        "final_dim": 8,
        "untie_final_proj": False,
        "layer_norm_first": False,
        "conv_feature_layers": TINY_CONV,
        "conv_bias": False,
        "logit_temp": 0.1,
        "target_glu": False,
        "feature_grad_mult": 0.1,
        "mask_length": 10,
        "mask_prob": 0.8,
        "mask_selection": "static",
        "mask_other": 0.0,
        "no_mask_overlap": False,
        "mask_min_space": 1,
        "mask_channel_length": 10,
        "mask_channel_prob": 0.0,
        "conv_pos": h["conv_pos"],
        "conv_pos_groups": h["conv_pos_groups"],
        "conv_pos_batch_norm": conv_pos_batch_norm,
        "latent_temp": [2.0, 0.5, 0.999995],
        "skip_masked": False,
        "skip_nomask": False,
        "checkpoint_activations": False,
        "required_seq_len_multiple": 2,
        "depthwise_conv_kernel_size": 31,
        "attn_type": "",
        "pos_enc_type": "abs",
        "fp16": False,
    }
    task_cfg = {
        "_name": "hubert_pretraining",
        "data": "/data/manifest",
        "fine_tuning": False,
        "labels": ["km"],
        "label_dir": "/data/labels",
        "label_rate": 25.0,
        "sample_rate": 16000,
        "normalize": normalize,
        "enable_padding": False,
        "max_keep_size": None,
        "max_sample_size": 250000,
        "min_sample_size": 32000,
        "single_target": False,
        "random_crop": True,
        "pad_audio": False,
    }
    return model_cfg, task_cfg


def _parse_conv(expr: str) -> list[tuple[int, int, int]]:
    # Fixture-only: the expression is our own constant above.
    return [(8, 10, 5)] + [(8, 3, 2)] * 4 + [(8, 2, 2)] * 3


def tiny_hubert_state(seed: int = 0, conv_pos_batch_norm: bool = True) -> dict[str, torch.Tensor]:
    """Random weights with fairseq names (docs/spiritlm.md, "fairseq names"), scaled so features are not degenerate."""
    g = torch.Generator().manual_seed(seed)
    h = TINY_HUBERT
    D, F, K, G = h["dim"], h["ffn"], h["conv_pos"], h["conv_pos_groups"]

    def rnd(*shape, scale=None):
        fan_in = shape[1] * (shape[2] if len(shape) > 2 else 1) if len(shape) > 1 else shape[0]
        s = scale if scale is not None else fan_in**-0.5
        return torch.randn(*shape, generator=g) * s

    sd: dict[str, torch.Tensor] = {}
    c_in = 1
    for i, (c, k, _s) in enumerate(_parse_conv(TINY_CONV)):
        sd[f"feature_extractor.conv_layers.{i}.0.weight"] = rnd(c, c_in, k)
        if i == 0:
            sd["feature_extractor.conv_layers.0.2.weight"] = 1.0 + 0.1 * rnd(c, scale=1.0)
            sd["feature_extractor.conv_layers.0.2.bias"] = 0.1 * rnd(c, scale=1.0)
        c_in = c
    sd["mask_emb"] = rnd(D, scale=1.0).uniform_(generator=g)
    sd["layer_norm.weight"] = 1.0 + 0.1 * rnd(c_in, scale=1.0)
    sd["layer_norm.bias"] = 0.1 * rnd(c_in, scale=1.0)
    sd["post_extract_proj.weight"] = rnd(D, c_in)
    sd["post_extract_proj.bias"] = 0.1 * rnd(D, scale=1.0)
    if conv_pos_batch_norm:
        sd["encoder.pos_conv.0.weight"] = 1.0 + 0.1 * rnd(D, scale=1.0)
        sd["encoder.pos_conv.0.bias"] = 0.1 * rnd(D, scale=1.0)
        sd["encoder.pos_conv.0.running_mean"] = 0.1 * rnd(D, scale=1.0)
        sd["encoder.pos_conv.0.running_var"] = 1.0 + rnd(D, scale=1.0).abs()
        sd["encoder.pos_conv.0.num_batches_tracked"] = torch.tensor(12345)
        sd["encoder.pos_conv.1.weight"] = rnd(D, D // G, K)
        sd["encoder.pos_conv.1.bias"] = 0.1 * rnd(D, scale=1.0)
    else:
        sd["encoder.pos_conv.0.weight_g"] = 1.0 + rnd(1, 1, K, scale=1.0).abs()
        sd["encoder.pos_conv.0.weight_v"] = rnd(D, D // G, K)
        sd["encoder.pos_conv.0.bias"] = 0.1 * rnd(D, scale=1.0)
    sd["encoder.layer_norm.weight"] = 1.0 + 0.1 * rnd(D, scale=1.0)
    sd["encoder.layer_norm.bias"] = 0.1 * rnd(D, scale=1.0)
    for n in range(h["layers"]):
        p = f"encoder.layers.{n}."
        for proj in ("q", "k", "v", "out"):
            # small out_proj/fc2 keep the residual stream frame-specific through 12 random post-LN layers
            sd[p + f"self_attn.{proj}_proj.weight"] = rnd(D, D, scale=0.25 * D**-0.5 if proj == "out" else None)
            sd[p + f"self_attn.{proj}_proj.bias"] = 0.1 * rnd(D, scale=1.0)
        sd[p + "self_attn_layer_norm.weight"] = 1.0 + 0.1 * rnd(D, scale=1.0)
        sd[p + "self_attn_layer_norm.bias"] = 0.1 * rnd(D, scale=1.0)
        sd[p + "fc1.weight"] = rnd(F, D)
        sd[p + "fc1.bias"] = 0.1 * rnd(F, scale=1.0)
        sd[p + "fc2.weight"] = rnd(D, F, scale=0.25 * F**-0.5)
        sd[p + "fc2.bias"] = 0.1 * rnd(D, scale=1.0)
        sd[p + "final_layer_norm.weight"] = 1.0 + 0.1 * rnd(D, scale=1.0)
        sd[p + "final_layer_norm.bias"] = 0.1 * rnd(D, scale=1.0)
    # pretraining-only tensors, dropped by the loader
    sd["label_embs_concat"] = rnd(VOCAB_UNITS, 8, scale=1.0)
    sd["final_proj.weight"] = rnd(8, D)
    sd["final_proj.bias"] = rnd(8, scale=1.0)
    return sd


def tiny_quantizer_state(seed: int = 1, dim: int | None = None, vocab_size: int = VOCAB_UNITS) -> tuple[dict, dict]:
    """model_cfg and the state dict of Linear, LeakyReLU, Linear (the release's widths, docs/spiritlm.md)."""
    g = torch.Generator().manual_seed(seed)
    dim = dim or TINY_HUBERT["dim"]
    upstream = dim
    m = upstream - (vocab_size + 1)
    widths = [dim, dim - m // 4, dim - m // 2, vocab_size + 1]
    sd = {}
    for j, i in enumerate((0, 2, 4)):
        fan_in = widths[j]
        # a larger scale than fan_in**-0.5 spreads the argmax over many units
        sd[f"{i}.weight"] = torch.randn(widths[j + 1], fan_in, generator=g) * (3.0 / fan_in**0.5)
        sd[f"{i}.bias"] = torch.randn(widths[j + 1], generator=g) * 0.1
    return {"vocab_size": vocab_size, "dim": dim, "upstream_dim": upstream}, sd


def build_tokenizer_model(path: Path) -> None:
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    P = pb.ModelProto.SentencePiece

    def add(piece: str, score: float, kind=P.NORMAL) -> None:
        x = m.pieces.add()
        x.piece, x.score, x.type = piece, score, kind

    add("<unk>", 0.0, P.UNKNOWN)
    add("<s>", 0.0, P.CONTROL)
    add("</s>", 0.0, P.CONTROL)
    for b in range(256):
        add(f"<0x{b:02X}>", 0.0, P.BYTE)
    merged: list[str] = []
    for w in WORDS:  # every prefix of length >= 2, so BPE can reach the whole word
        for i in range(2, len(w) + 1):
            if w[:i] not in merged:
                merged.append(w[:i])
    chars = [c for c in CHARS if c not in merged]
    n_filler = 32000 - 259 - len(merged) - len(chars) - 1  # -1 for "▁" at SPACE_ID
    fillers = [chr(0x4E00 + i) if i < 20992 else chr(0xAC00 + i - 20992) for i in range(n_filler)]
    normal = merged + fillers + chars
    normal.insert(SPACE_ID - 259, "▁")
    for i, p in enumerate(normal):
        add(p, -float(i))  # BPE merge priority: earlier pieces merge first
    assert len(m.pieces) == 32000 and m.pieces[SPACE_ID].piece == "▁"
    add("[Text]", 0.0, P.USER_DEFINED)
    add("[Speech]", 0.0, P.USER_DEFINED)
    for u in range(VOCAB_UNITS + 1):
        add(f"[Hu{u}]", 0.0, P.USER_DEFINED)
    assert len(m.pieces) == 32503
    ts = m.trainer_spec
    ts.model_type = pb.TrainerSpec.BPE
    ts.vocab_size = len(m.pieces)
    ts.byte_fallback = True
    ts.unk_id, ts.bos_id, ts.eos_id, ts.pad_id = 0, 1, 2, -1
    ns = m.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = True
    ns.remove_extra_whitespaces = False
    path.write_bytes(m.SerializeToString())


def tiny_llama_state(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random Llama weights with HF key names, in bfloat16 like the release (no transformers import: fast).

    Init as transformers does (normal, std 0.02; norms at 1), with the head scaled by 20 so that greedy
    outputs and probabilities move visibly.
    """
    g = torch.Generator().manual_seed(seed)
    H, FF, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]

    def w(*shape, std=0.02):
        return (torch.randn(*shape, generator=g) * std).to(torch.bfloat16)

    sd = {"model.embed_tokens.weight": w(V, H)}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        for proj in ("q", "k", "v", "o"):
            sd[p + f"self_attn.{proj}_proj.weight"] = w(H, H)
        sd[p + "mlp.gate_proj.weight"] = w(FF, H)
        sd[p + "mlp.up_proj.weight"] = w(FF, H)
        sd[p + "mlp.down_proj.weight"] = w(H, FF)
        sd[p + "input_layernorm.weight"] = torch.ones(H, dtype=torch.bfloat16)
        sd[p + "post_attention_layernorm.weight"] = torch.ones(H, dtype=torch.bfloat16)
    sd["model.norm.weight"] = torch.ones(H, dtype=torch.bfloat16)
    sd["lm_head.weight"] = w(V, H, std=0.4)
    return sd


def build_tiny_lm(folder: Path, seed: int = 0, hidden: int = 64, layers: int = 2, legacy: bool | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": 2 * hidden,
        "max_position_embeddings": 4096,
        "model_type": "llama",
        "num_attention_heads": 4,
        "num_hidden_layers": layers,
        "num_key_value_heads": 4,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.41.2",
        "use_cache": True,
        "vocab_size": LM_VOCAB,
    }
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    (folder / "generation_config.json").write_text(
        json.dumps({"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.41.2"}, indent=2)
    )
    state = tiny_llama_state(cfg, seed)
    torch.save(state, folder / "pytorch_model.bin")
    build_tokenizer_model(folder / "tokenizer.model")
    tok_cfg = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1000000000000000019884624838656,
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
    }
    if legacy is not None:
        tok_cfg["legacy"] = legacy
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=2)
    )


def build_tiny_spiritlm(root: Path, seed: int = 0, conv_pos_batch_norm: bool = True, normalize: bool = False) -> dict[str, Path]:
    """Write the whole tiny checkpoint tree under ``root``; returns the paths by role."""
    root = Path(root)
    lm = root / LM_SUBDIR
    hub = root / HUBERT_SUBDIR
    hub.mkdir(parents=True, exist_ok=True)
    build_tiny_lm(lm, seed=seed)
    model_cfg, task_cfg = _fairseq_cfg(conv_pos_batch_norm, normalize)
    symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [str(i) for i in range(VOCAB_UNITS)]
    torch.save(
        {
            "model_cfg": model_cfg,
            "task_cfg": task_cfg,
            "model_weight": tiny_hubert_state(seed, conv_pos_batch_norm),
            "dictionaries_symbols": [symbols],
        },
        hub / "mhubert_base_25hz.pt",
    )
    q_cfg, q_sd = tiny_quantizer_state(seed + 1)
    torch.save({"model_cfg": q_cfg, "model_weight": q_sd}, hub / "L11_quantizer_500.pt")
    return tiny_spiritlm_paths(root)


def tiny_spiritlm_paths(root: Path) -> dict[str, Path]:
    """The paths by role of a tree that :func:`build_tiny_spiritlm` wrote under ``root``."""
    root = Path(root)
    lm, hub = root / LM_SUBDIR, root / HUBERT_SUBDIR
    return {
        "root": root,
        "lm": lm,
        "tokenizer_model": lm / "tokenizer.model",
        "hubert": hub / "mhubert_base_25hz.pt",
        "quantizer": hub / "L11_quantizer_500.pt",
    }


if __name__ == "__main__":  # pragma: no cover
    import sys
    import time

    t = time.time()
    print(build_tiny_spiritlm(Path(sys.argv[1])), f"{time.time() - t:.2f}s")
