"""Convert a CTranslate2 Whisper model (``model.bin``, binary version 6) into an openai-whisper
checkpoint, so the packaged faster-whisper-base also runs under ``openai-whisper``.

The reader follows CTranslate2's documented serialisation: version (u32), model name (u16 length +
NUL-terminated UTF-8), revision (u32), variable count (u32); per variable: name, rank (u8), dims (u32
each), dtype id (u8: float32, int8, int16, int32, float16, bfloat16), byte count (u32), raw bytes;
then aliases (count, then name pairs). The mapping to openai-whisper's state-dict names is :func:`ct2_to_openai_whisper`.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, None)  # bfloat16 unsupported here


def read_ct2(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """Model name and variables (aliases resolved) of a CTranslate2 ``model.bin``."""
    buf = Path(path).read_bytes()
    pos = 0

    def num(fmt: str) -> int:
        nonlocal pos
        (v,) = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v

    def text() -> str:
        nonlocal pos
        n = num("H")
        v = buf[pos:pos + n - 1].decode("utf-8")
        pos += n
        return v

    version = num("I")
    if version < 5:
        raise ValueError(f"unsupported CTranslate2 binary version {version}")
    name = text()
    num("I")  # revision
    out: dict[str, np.ndarray] = {}
    for _ in range(num("I")):
        key = text()
        shape = [num("I") for _ in range(num("B"))]
        dt = _DTYPES[num("B")]
        nbytes = num("I")
        if dt is None:
            raise ValueError(f"{key}: bfloat16 variables are not supported")
        out[key] = np.frombuffer(buf, dtype=dt, count=nbytes // np.dtype(dt).itemsize, offset=pos).reshape(shape)
        pos += nbytes
    for _ in range(num("I")):
        alias, target = text(), text()
        out[alias] = out[target]
    return name, out


def _attn(sd: dict, dst: str, v: dict, src: str, fused: int) -> None:
    """Split a fused projection: fused=3 (q,k,v in linear_0, out in linear_1) or fused=2 (cross
    attention: q in linear_0, k,v in linear_1, out in linear_2). Keys carry no bias in openai-whisper."""
    if fused == 3:
        w, b = v[f"{src}/linear_0/weight"], v[f"{src}/linear_0/bias"]
        q, k, val = np.split(w, 3)
        qb, _, vb = np.split(b, 3)
        out = "linear_1"
    else:
        q, qb = v[f"{src}/linear_0/weight"], v[f"{src}/linear_0/bias"]
        k, val = np.split(v[f"{src}/linear_1/weight"], 2)
        _, vb = np.split(v[f"{src}/linear_1/bias"], 2)
        out = "linear_2"
    sd[f"{dst}.query.weight"], sd[f"{dst}.query.bias"] = q, qb
    sd[f"{dst}.key.weight"] = k
    sd[f"{dst}.value.weight"], sd[f"{dst}.value.bias"] = val, vb
    sd[f"{dst}.out.weight"], sd[f"{dst}.out.bias"] = v[f"{src}/{out}/weight"], v[f"{src}/{out}/bias"]


def _ln(sd: dict, dst: str, v: dict, src: str) -> None:
    sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]


def _lin(sd: dict, dst: str, v: dict, src: str) -> None:
    sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v[f"{src}/weight"], v[f"{src}/bias"]


def ct2_to_openai_whisper(model_bin: str | Path) -> dict:
    """An openai-whisper checkpoint ``{"dims": ..., "model_state_dict": ...}`` (torch float16 tensors)."""
    import torch

    name, v = read_ct2(model_bin)
    if name != "WhisperSpec":
        raise ValueError(f"{model_bin} holds a {name}, not a Whisper model")
    sd: dict[str, np.ndarray] = {}
    for c in ("conv1", "conv2"):
        _lin(sd, f"encoder.{c}", v, f"encoder/{c}")
    sd["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
    n_audio_layer = sum(1 for k in v if k.startswith("encoder/layer_") and k.endswith("/ffn/linear_0/weight"))
    n_text_layer = sum(1 for k in v if k.startswith("decoder/layer_") and k.endswith("/ffn/linear_0/weight"))

    def block(s: str, d: str) -> None:
        """Self-attention and FFN of one encoder or decoder layer (shared by both stacks)."""
        _attn(sd, f"{d}.attn", v, f"{s}/self_attention", 3)
        _ln(sd, f"{d}.attn_ln", v, f"{s}/self_attention/layer_norm")
        _lin(sd, f"{d}.mlp.0", v, f"{s}/ffn/linear_0")
        _lin(sd, f"{d}.mlp.2", v, f"{s}/ffn/linear_1")
        _ln(sd, f"{d}.mlp_ln", v, f"{s}/ffn/layer_norm")

    for i in range(n_audio_layer):
        block(f"encoder/layer_{i}", f"encoder.blocks.{i}")
    _ln(sd, "encoder.ln_post", v, "encoder/layer_norm")
    sd["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]
    sd["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
    for i in range(n_text_layer):
        s, d = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        block(s, d)
        _attn(sd, f"{d}.cross_attn", v, f"{s}/attention", 2)
        _ln(sd, f"{d}.cross_attn_ln", v, f"{s}/attention/layer_norm")
    _ln(sd, "decoder.ln", v, "decoder/layer_norm")
    dims = {
        "n_mels": int(v["encoder/conv1/weight"].shape[1]),
        "n_audio_ctx": int(v["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(v["encoder/conv1/weight"].shape[0]),
        "n_audio_head": int(v["encoder/num_heads"]),
        "n_audio_layer": n_audio_layer,
        "n_vocab": int(v["decoder/embeddings/weight"].shape[0]),
        "n_text_ctx": int(v["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(v["decoder/embeddings/weight"].shape[1]),
        "n_text_head": int(v["decoder/num_heads"]),
        "n_text_layer": n_text_layer,
    }
    state = {k: torch.from_numpy(np.array(a, copy=True)) for k, a in sd.items()}
    return {"dims": dims, "model_state_dict": state}
