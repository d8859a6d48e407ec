"""Tokenizer-facing helpers: a prompt's ids and subject span, and readable token strings."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from ..spans import Encoded, SpanError, token_span_from_offsets


def _offsets_by_decoding(tokenizer, ids: list[int], text: str) -> list[tuple[int, int]]:
    """Offsets for tokenizers without offset mapping: grow the decoded prefix one token at a time."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    offsets, prev = [], 0
    for i, tid in enumerate(ids):
        if tid in special:
            offsets.append((0, 0))
            continue
        decoded = tokenizer.decode(ids[: i + 1], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        end = min(len(decoded), len(text))
        offsets.append((prev, end))
        prev = end
    return offsets


def encode_prompt(tokenizer, prompt: str, subject: str, add_special_tokens: bool = True) -> Encoded:
    """Tokenize a prompt and locate the first occurrence of the subject in token positions."""
    c0 = prompt.find(subject)
    if c0 < 0:
        raise SpanError(f"subject {subject!r} does not occur in prompt {prompt!r}")
    try:
        enc = tokenizer(prompt, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        ids = list(enc["input_ids"])
    except (NotImplementedError, ValueError, TypeError):
        ids = list(tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"])
        offsets = _offsets_by_decoding(tokenizer, ids, prompt)
    return Encoded(ids, offsets, token_span_from_offsets(offsets, c0, c0 + len(subject)))


@lru_cache(maxsize=1)
def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet (printable stand-ins for the 256 bytes), inverted: char → byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


_SP_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def token_bytes(tokenizer, token_id: int) -> bytes | None:
    """The raw bytes a token stands for (byte-level BPE or sentencepiece byte fallback), else None."""
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    if not isinstance(piece, str):
        return None
    if m := _SP_BYTE.match(piece):
        return bytes([int(m.group(1), 16)])
    table = _byte_level_decoder()
    if piece and all(c in table for c in piece):
        return bytes(table[c] for c in piece)
    return None


def token_strings(tokenizer, ids: Sequence[int]) -> list[str]:
    """Each token decoded on its own, readably: a token holding part of a multi-byte character decodes to
    '\ufffd' ('�'); it is shown as its escaped bytes instead (e.g. '\\xe2\\x80'), keeping any whole characters."""
    out = []
    for i in ids:
        text = tokenizer.decode([int(i)])
        if "\ufffd" in text:
            raw = token_bytes(tokenizer, i)
            if raw is not None:
                text = raw.decode("utf-8", errors="backslashreplace")
        out.append(text)
    return out
