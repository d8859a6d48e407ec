"""The long IE table ↔ one prompt's grids (positions × layers): the one conversion every reader shares.

The workflow stores IE in long form (``ie_per_prompt.parquet`` and the trace shards: one row per model,
modality, prompt, kind, ``token_index`` and ``layer``; the prompt's length in ``n_tokens``). The tracer, the
S→T aggregation, the token categories and the per-prompt figures work on grids. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def ie_grid(rows: pd.DataFrame, column: str = "ie", fill: float = np.nan) -> np.ndarray:
    """``column`` of one prompt and kind's rows as an ``n_tokens × layers`` grid; cells without a row hold
    ``fill`` (NaN: absent, so a mean notices; 0 where an absent cell means no effect)."""
    T, L = int(rows["n_tokens"].iloc[0]), int(rows["layer"].max()) + 1
    grid = np.full((T, L), fill, dtype=float)
    grid[rows["token_index"].to_numpy(int), rows["layer"].to_numpy(int)] = rows[column].to_numpy(float)
    return grid


def grid_frame(grids: Mapping[str, np.ndarray], tokens: Sequence[str], **per_token: Sequence) -> pd.DataFrame:
    """One prompt and kind's grids (same shape, ``positions × layers``) as long rows: ``token_index``,
    ``token``, ``layer``, one column per grid, and per-position columns (``per_token``) repeated over layers.
    The inverse of :func:`ie_grid` (row order: position, then layer)."""
    T, L = next(iter(grids.values())).shape
    t = np.repeat(np.arange(T), L)
    out = {"token_index": t, "token": np.asarray(tokens, dtype=object)[t], "layer": np.tile(np.arange(L), T)}
    out.update({name: g.ravel() for name, g in grids.items()})
    out.update({name: np.asarray(v)[t] for name, v in per_token.items()})
    return pd.DataFrame(out)


__all__ = ["grid_frame", "ie_grid"]
