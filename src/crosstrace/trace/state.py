"""Records shared by the tracing engines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


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
    """One prompt, one kind: the answer o, P_clean[o], P_corrupted[o] and P_restored[o] per (token, layer)."""

    kind: str
    answer_id: int
    p_clean: float
    p_corrupted: float
    p_restored: np.ndarray  # (T, L), float64

    @property
    def ie(self) -> np.ndarray:
        """Indirect effect IE(t, l) = P_restored[o] - P_corrupted[o] (both averaged over noise draws)."""
        return self.p_restored - self.p_corrupted
