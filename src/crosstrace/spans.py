"""Subject spans and the token categories over them: the one definition the tracer, S→T and the report share.

Torch-free (numpy only). A span is a half-open range of positions ``[b, e)``; the categories are those of
the paper (§2.4) and ROME, named in :mod:`crosstrace.vocabulary`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class SpanError(ValueError):
    pass


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    offsets: list[tuple[int, int]]  # character span of each token in the prompt; (0, 0) for special tokens
    subject_span: tuple[int, int]  # token positions [b, e)


def token_span_from_offsets(offsets: Sequence[tuple[int, int]], char_start: int, char_end: int) -> tuple[int, int]:
    """Tokens whose characters overlap [char_start, char_end).

    Works on characters, not words, so a subject glued to "'s" ("Apple's") or split mid-word still maps
    to the tokens that carry it. Special tokens (empty offsets) never belong to the span.
    """
    hits = [i for i, (s, e) in enumerate(offsets) if e > s and s < char_end and e > char_start]
    if not hits:
        raise SpanError(f"no token overlaps characters [{char_start}, {char_end})")
    b, e = hits[0], hits[-1] + 1
    if e - b != len(hits):
        raise SpanError(f"tokens overlapping [{char_start}, {char_end}) are not contiguous: {hits}")
    return b, e


def subject_token_span(prompt: str, subject: str, offsets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The token positions [b, e) of the subject's first occurrence in ``prompt`` (``offsets``: each token's
    characters in ``prompt``); a SpanError when the prompt does not contain it."""
    c0 = prompt.find(subject)
    if c0 < 0:
        raise SpanError(f"subject {subject!r} does not occur in prompt {prompt!r}")
    return token_span_from_offsets(offsets, c0, c0 + len(subject))


def category_positions(span: tuple[int, int], n_tokens: int) -> dict[str, list[int]]:
    """Token positions averaged into each category (docs/method.md); absent categories are omitted.

    With subject positions [b, e) and last index T-1: first subject b; middle b+1..e-2; last subject
    e-1; first subsequent e; further e+1..T-2; last token T-1. A one-token subject is both first and last.
    """
    b, e = span
    T = n_tokens
    if not (0 <= b < e <= T):
        raise SpanError(f"subject span {span} is not inside a prompt of {T} tokens")
    cats = {
        "first_subject": [b],
        "middle_subject": list(range(b + 1, e - 1)),
        "last_subject": [e - 1],
        "first_subsequent": [e] if e <= T - 1 else [],
        "further": list(range(e + 1, T - 1)),
        "last": [T - 1],
    }
    return {k: v for k, v in cats.items() if v}


def category_means(ie: np.ndarray, span: tuple[int, int]) -> dict[str, np.ndarray]:
    """Per-category IE (mean over the category's positions), each an array over layers."""
    return {c: ie[pos].mean(axis=0) for c, pos in category_positions(span, ie.shape[0]).items()}


__all__ = ["Encoded", "SpanError", "category_means", "category_positions", "subject_token_span",
           "token_span_from_offsets"]
