"""Tokenizer-facing helpers: a prompt's ids and subject span, and readable token strings."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache

from ..spans import Encoded, SpanError, subject_token_span


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


def encode_text(tokenizer, text: str, add_special_tokens: bool = True) -> Encoded:
    """Token ids and character offsets of ``text`` (no subject: span (0, 0))."""
    try:
        enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        ids = list(enc["input_ids"])
    except (NotImplementedError, ValueError, TypeError):
        ids = list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
        offsets = _offsets_by_decoding(tokenizer, ids, text)
    return Encoded(ids, offsets, (0, 0))


def encode_prompt(tokenizer, prompt: str, subject: str, add_special_tokens: bool = True) -> Encoded:
    """Tokenize a prompt and locate the first occurrence of the subject in token positions."""
    enc = encode_text(tokenizer, prompt, add_special_tokens)
    return Encoded(enc.input_ids, enc.offsets, subject_token_span(prompt, subject, enc.offsets))


def attribute_token_ids(encode: Callable[[str], Encoded], prompt: str, attribute: str) -> list[int]:
    """The attribute's tokens as they follow the prompt (what ``trace.answer: attribute_*`` reads).

    Rule: ``encode`` (the traced prompt's own encoding, offsets into its text) is applied to
    prompt + " " + attribute (no space added when the prompt ends or the attribute starts with
    whitespace); the answer tokens are the tokens after the prompt's own ones that carry characters past
    the prompt's end (offsets: trailing special tokens such as an EOS are not part of it). In context,
    not alone: a word's first token differs from the same word at the start of a text (" Paris" vs
    "Paris", "▁Paris" after a dummy prefix). The prompt's tokens must come out unchanged: a tokenizer
    that merges the prompt's end with the attribute (a token spanning the boundary, e.g. a prompt
    ending in a space before a byte-level BPE word) would teacher-force a sequence that is not the traced
    prompt, so that prompt is refused with a SpanError (quarantined with the reason).
    """
    if not attribute or not attribute.strip():
        raise SpanError(f"attribute {attribute!r} is empty")
    sep = "" if prompt[-1:].isspace() or attribute[0].isspace() else " "
    text = prompt + sep + attribute
    own, full = encode(prompt), encode(text)
    # the prompt's tokens that carry text: trailing special tokens (an EOS some tokenizers append) do not
    n_own = max((i + 1 for i, (s, e) in enumerate(own.offsets) if e > s), default=0)
    own = own.input_ids[:n_own]
    cut = len(prompt)
    straddle = [i for i, (s, e) in enumerate(full.offsets) if s < cut < e]
    if straddle or full.input_ids[: len(own)] != own:
        where = f" (token {straddle[0]} spans characters on both sides)" if straddle else ""
        raise SpanError(f"the tokenizer merges the end of prompt {prompt!r} with attribute {attribute!r}{where}: "
                        f"the prompt's tokens change when the attribute follows it")
    rest = list(zip(full.input_ids, full.offsets, strict=True))[len(own) :]
    ids = [i for i, (s, e) in rest if e > s and e > cut]
    if not ids:
        raise SpanError(f"attribute {attribute!r} gives no token after prompt {prompt!r}")
    return ids


def subject_token_ids(tokenizer, subjects: Sequence[str]) -> list[list[int]]:
    """Every subject tokenized alone, as the tokenizer writes a text (special tokens included): the basis of
    ROME's noise statistic s3 (:func:`crosstrace.trace.noise.embedding_std` over these ids)."""
    return [list(tokenizer(s)["input_ids"]) for s in subjects]


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
