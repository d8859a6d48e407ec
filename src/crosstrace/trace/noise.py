"""Corruption noise: the scale ν (ROME's "s3") and seeded per-(prompt, draw) noise tensors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

NOISE_KINDS = ("gaussian", "uniform")


@dataclass(frozen=True)
class NoiseConfig:
    """How the subject embeddings are corrupted.

    ``scale`` is ν itself once resolved. ``multiple`` × std (ROME's s3 uses 3) is resolved against the
    dataset's subject embeddings by :func:`embedding_std`; an ``absolute`` value bypasses that.
    """

    samples: int = 10
    kind: str = "gaussian"
    multiple: float | None = 3.0
    absolute: float | None = None
    seed: int = 0

    def __post_init__(self):
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {self.kind!r}")
        if self.samples < 1:
            raise ValueError(f"noise samples must be >= 1, got {self.samples}")
        if (self.multiple is None) == (self.absolute is None):
            raise ValueError("set exactly one of noise multiple (× std of subject embeddings) or absolute")

    def scale(self, std: float | None) -> float:
        if self.absolute is not None:
            return float(self.absolute)
        if std is None:
            raise ValueError("noise multiple given but the subject-embedding std is unknown")
        return float(self.multiple) * float(std)


def embedding_std(embed: torch.nn.Module, token_id_lists: Iterable[Sequence[int]]) -> float:
    """Unbiased std over all elements of the input embeddings of the given token sequences.

    ROME's convention: each subject tokenized alone (the model tokenizer's defaults), all their token
    embeddings pooled together. For speech, the lists are the unit ids inside each subject span.
    """
    ids = [i for seq in token_id_lists for i in seq]
    if not ids:
        raise ValueError("no tokens to compute the embedding std from")
    w = embed.weight
    with torch.no_grad():
        return vectors_std([w[torch.tensor(ids, device=w.device)]])


def vectors_std(vectors: Iterable[torch.Tensor]) -> float:
    """Unbiased std over all elements of the given input-embedding vectors (each tensor: positions × hidden),
    pooled: the statistic of :func:`embedding_std` for inputs that are not token rows (Qwen2-Audio's projected
    audio frames at the subjects' positions)."""
    vecs = [v.detach().reshape(-1, v.shape[-1]).double().cpu() for v in vectors]
    if not vecs or not sum(v.shape[0] for v in vecs):
        raise ValueError("no input embeddings to compute the std from")
    return float(torch.cat(vecs).std())


def draw_noise(seed: int, known_id: int, samples: int, n_tokens: int, hidden: int, kind: str = "gaussian") -> torch.Tensor:
    """ε for one prompt: (samples, n_tokens, hidden) float32, unscaled.

    Draw d of prompt k comes from its own generator seeded by (seed, k, d), so a prompt's noise does
    not depend on which shard, batch or order it is traced in.
    """
    out = np.empty((samples, n_tokens, hidden), dtype=np.float32)
    for d in range(samples):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, known_id, d])))
        if kind == "gaussian":
            out[d] = rng.standard_normal((n_tokens, hidden), dtype=np.float32)
        elif kind == "uniform":
            out[d] = rng.uniform(-1.0, 1.0, (n_tokens, hidden)).astype(np.float32)
        else:
            raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {kind!r}")
    return torch.from_numpy(out)
