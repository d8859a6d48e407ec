"""Figures for the statistics module (matplotlib, non-interactive).

Figures are built with :class:`matplotlib.figure.Figure` directly (rendered by the Agg / PDF
backends on save), so nothing here touches pyplot's global state or the session's backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["plot_similarity_by_layer"]

_PANELS = (("cos", "cosine similarity"), ("l2", "L2 distance"))


def plot_similarity_by_layer(
    sim: pd.DataFrame | Mapping[str, pd.DataFrame],
    out_stem: str | Path,
    title: str | None = None,
    show_random: bool = True,
    dpi: int = 150,
    formats: Sequence[str] = ("png", "pdf"),
) -> list[Path]:
    """Two panels (cosine, L2) over layers with CI bands; writes ``<out_stem>.<format>`` per format.

    ``sim`` is the output of :func:`crosstrace.report.stats.similarity_by_layer`, or a mapping
    label → such a table to overlay several series (e.g. one per model). Each series is a solid
    line with a shaded CI band; with ``show_random`` its matched-random baseline is drawn dashed
    in the same colour with a lighter band. Returns the written paths.
    """
    series = {"matched": sim} if isinstance(sim, pd.DataFrame) else dict(sim)
    if not series:
        raise ValueError("nothing to plot")
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, (col, ylabel) in zip(axes, _PANELS, strict=True):
        for i, (label, df) in enumerate(series.items()):
            color = f"C{i}"
            x = df["layer"].to_numpy()
            ax.plot(x, df[col], color=color, lw=1.6, label=label)
            ax.fill_between(x, df[f"{col}_ci_low"], df[f"{col}_ci_high"], color=color, alpha=0.25, lw=0)
            rcol = f"random_{col}"
            if show_random and rcol in df.columns:
                ax.plot(x, df[rcol], color=color, lw=1.2, ls="--", label=f"{label}: random pairs")
                ax.fill_between(
                    x, df[f"{rcol}_ci_low"], df[f"{rcol}_ci_high"], color=color, alpha=0.12, lw=0
                )
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, frameon=False)
    if title:
        fig.suptitle(title)
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in formats:
        p = out_stem.with_name(f"{out_stem.name}.{ext}")
        fig.savefig(p, dpi=dpi)
        paths.append(p)
    return paths
