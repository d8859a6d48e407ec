"""Records shared by the tracing engines, and the answer quantity both of them read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..models.adapter import Adapter


def answer_prob(logits: torch.Tensor, answer_ids: Sequence[int]) -> torch.Tensor:
    """P[o] per row, float64, from the logits (rows, n, vocab) of the n positions that predict o_1..o_n.

    The product of the per-position probabilities: with one token it is ROME's softmax(logits)[o].
    """
    ids = torch.as_tensor(list(answer_ids), device=logits.device)
    p = logits.float().softmax(-1).gather(-1, ids.expand(logits.shape[0], -1)[..., None])[..., 0]
    return p.double().prod(-1)


def clean_embeds(adapter: Adapter, prompt: torch.Tensor, answer_ids: Sequence[int] | None = None) -> torch.Tensor:
    """(1, T + n − 1, hidden): the input embeddings of the clean run.

    ``prompt`` is the prompt's token ids (T,), embedded here, or its input embeddings (T, hidden) when they are
    not those of token ids (a continuous-input family: Qwen2-Audio's projected audio frames among its text
    embeddings). An n-token answer is teacher-forced: the embeddings of o_1..o_{n−1} follow the prompt.
    """
    dev = adapter.embed.weight.device
    x = adapter.embed(prompt.to(dev)) if prompt.ndim == 1 else prompt.to(dev, adapter.embed.weight.dtype)
    if answer_ids is not None and len(answer_ids) > 1:
        x = torch.cat([x, adapter.embed(torch.tensor(list(answer_ids)[:-1], device=dev))])
    return x[None]


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
