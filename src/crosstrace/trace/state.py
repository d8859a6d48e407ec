"""Records shared by the tracing engines, and the answer quantity both of them read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


def answer_prob(logits: torch.Tensor, answer_ids: Sequence[int]) -> torch.Tensor:
    """P[o] per row, float64, from the logits (rows, n, vocab) of the n positions that predict o_1..o_n.

    The product of the per-position probabilities: with one token it is ROME's softmax(logits)[o].
    """
    ids = torch.as_tensor(list(answer_ids), device=logits.device)
    p = logits.float().softmax(-1).gather(-1, ids.expand(logits.shape[0], -1)[..., None])[..., 0]
    return p.double().prod(-1)


@dataclass(frozen=True)
class Corruption:
    """Where and how the subject is corrupted: positions [b, e) and the scaled noise ν·ε (samples, e-b, hidden)."""

    span: tuple[int, int]
    noise: torch.Tensor

    def __post_init__(self):
        b, e = self.span
        if self.noise.ndim != 3 or self.noise.shape[1] != e - b:
            raise ValueError(f"noise must be (samples, {e - b}, hidden) for span {self.span}, got {tuple(self.noise.shape)}")


@dataclass
class KindTrace:
    """One prompt, one kind: the answer o, P_clean[o], P_corrupted[o] and P_restored[o] per (token, layer).

    ``answer_id`` is o's first token; ``answer_ids`` all tokens read (more than one for attribute_full).
    """

    kind: str
    answer_id: int
    p_clean: float
    p_corrupted: float
    p_restored: np.ndarray  # (T, L) over the prompt's tokens, float64
    answer_ids: tuple[int, ...] = ()

    def __post_init__(self):
        self.answer_ids = tuple(self.answer_ids) or (self.answer_id,)

    @property
    def ie(self) -> np.ndarray:
        """Indirect effect IE(t, l) = P_restored[o] - P_corrupted[o] (both averaged over noise draws)."""
        return self.p_restored - self.p_corrupted
