"""What the traced probability P[o] reads (``trace.answer``); a torch-free module shared by tracer and report.

- ``top1`` (ROME, the default): o = the clean run's greedy next token.
- ``attribute_first``: o = the first token of the record's attribute.
- ``attribute_full``: o = every token o_1..o_n of the attribute, teacher-forced: o_1..o_{n-1} are
  appended to the prompt and P[o] = Π_j P(o_j | prompt, o_<j), read at the last n positions.

The attribute's tokens are those that follow the prompt in context
(:func:`crosstrace.trace.tokens.attribute_token_ids`). For a one-token attribute the two attribute
modes are the same quantity.
"""

from __future__ import annotations

from collections.abc import Sequence

ANSWER_MODES: tuple[str, ...] = ("top1", "attribute_first", "attribute_full")
ANSWER_LABELS = {
    "top1": "o = clean top-1 token",
    "attribute_first": "o = attribute's first token",
    "attribute_full": "o = whole attribute (joint P, teacher-forced)",
}


def answer_label(mode: str | None) -> str:
    """Short text for figure titles (None: a run from before the setting existed, i.e. top1)."""
    mode = mode or "top1"
    return ANSWER_LABELS.get(mode, f"answer {mode}")


def answer_tokens(mode: str, attribute_ids: Sequence[int] | None) -> list[int] | None:
    """The tokens an engine reads for ``mode`` (None: top1, decided by the clean run)."""
    if mode not in ANSWER_MODES:
        raise ValueError(f"answer must be one of {ANSWER_MODES}, got {mode!r}")
    if mode == "top1":
        return None
    if not attribute_ids:
        raise ValueError(f"answer {mode!r} needs the attribute's token ids")
    return [int(i) for i in (attribute_ids[:1] if mode == "attribute_first" else attribute_ids)]
