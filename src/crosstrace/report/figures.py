"""Log-AIE heatmaps: rows are the six token categories, columns are layers (paper Fig. 2)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from ..trace.tokens import CATEGORIES, CATEGORY_LABELS  # noqa: E402

KIND_TITLES = {"hidden": "hidden states", "mlp": "MLP", "attn": "attention"}
KIND_CMAPS = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}
MODALITY_LABELS = {"t2t": "T→T", "s2t": "S→T"}


def aie_matrix(aie: pd.DataFrame) -> tuple[np.ndarray, list[str], int]:
    """(categories × layers) AIE for one (model, modality, kind); NaN for absent categories."""
    L = int(aie["layer"].max()) + 1
    mat = np.full((len(CATEGORIES), L), np.nan)
    for i, c in enumerate(CATEGORIES):
        g = aie[aie["category"] == c]
        mat[i, g["layer"].to_numpy()] = g["aie"].to_numpy()
    return mat, [CATEGORY_LABELS[c] for c in CATEGORIES], L


def log_norm(values: np.ndarray) -> tuple[LogNorm, int]:
    """A log colour scale over the positive cells; returns the norm and the count of non-positive cells."""
    finite = values[np.isfinite(values)]
    pos = finite[finite > 0]
    lo = float(pos.min()) if pos.size else 1e-6
    hi = float(pos.max()) if pos.size else 1e-5
    if hi <= lo:
        hi = lo * 10
    return LogNorm(vmin=lo, vmax=hi), int((finite <= 0).sum())


def draw_heatmap(ax, mat: np.ndarray, labels: Sequence[str], norm: LogNorm, cmap: str, title: str):
    """Non-positive AIE cannot be logged: those cells are drawn in the floor colour (vmin)."""
    shown = np.where(np.isfinite(mat), np.clip(mat, norm.vmin, None), np.nan)
    cm = plt.get_cmap(cmap).copy()
    cm.set_bad("#eeeeee")
    im = ax.imshow(shown, aspect="auto", norm=norm, cmap=cm, interpolation="nearest")
    ax.set_yticks(range(len(labels)), labels)
    L = mat.shape[1]
    step = max(1, L // 10)
    ax.set_xticks(range(0, L, step))
    ax.set_xlabel("layer")
    ax.set_title(title, fontsize=10)
    return im


def heatmap_figure(aie: pd.DataFrame, kind: str, meta: dict) -> plt.Figure:
    """One kind for one model and modality, readable on its own."""
    sub = aie[aie["kind"] == kind]
    mat, labels, _ = aie_matrix(sub)
    norm, n_nonpos = log_norm(mat)
    fig, ax = plt.subplots(figsize=(7.5, 3.2), constrained_layout=True)
    n = int(sub["n"].max()) if len(sub) else 0
    title = (f"{meta['model']} {MODALITY_LABELS.get(meta['modality'], meta['modality'])}: log AIE, "
             f"{KIND_TITLES[kind]}" + (f" (window {meta['window']})" if kind != "hidden" else "")
             + f"\n{n} prompts, noise ν = {meta['noise_scale']:.3g} × {meta['samples']} draws")
    im = draw_heatmap(ax, mat, labels, norm, KIND_CMAPS[kind], title)
    cb = fig.colorbar(im, ax=ax)
    cb.set_label("AIE (log scale)")
    if n_nonpos:
        fig.text(0.01, 0.01, f"{n_nonpos} cell(s) with AIE ≤ 0 drawn at the floor colour", fontsize=7, color="0.4")
    return fig


def panel_figure(aie: pd.DataFrame, rows: Sequence[tuple[str, str]], kinds: Sequence[str], shared_scale: bool = True) -> plt.Figure:
    """Paper layout: one row per (model, modality), one column per kind, one colour scale per column."""
    fig, axes = plt.subplots(len(rows), len(kinds), figsize=(4.6 * len(kinds), 2.6 * len(rows) + 0.6),
                             constrained_layout=True, squeeze=False)
    for j, kind in enumerate(kinds):
        col = aie[aie["kind"] == kind]
        mats = [aie_matrix(col[(col["model"] == m) & (col["modality"] == mod)])[0] for m, mod in rows]
        norm, _ = log_norm(np.concatenate([x.ravel() for x in mats])) if shared_scale else (None, 0)
        for i, (m, mod) in enumerate(rows):
            sub = col[(col["model"] == m) & (col["modality"] == mod)]
            n = int(sub["n"].max()) if len(sub) else 0
            nn = norm or log_norm(mats[i])[0]
            im = draw_heatmap(axes[i, j], mats[i], aie_matrix(sub)[1], nn, KIND_CMAPS[kind],
                              f"{m} {MODALITY_LABELS.get(mod, mod)} · {KIND_TITLES[kind]} (n={n})")
            if j > 0:
                axes[i, j].set_yticklabels([])
        fig.colorbar(im, ax=axes[:, j], shrink=0.8, label="AIE (log)")
    return fig


def save(fig: plt.Figure, paths: Sequence[str | Path]) -> None:
    for p in paths:
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=200)
    plt.close(fig)


def prompt_figure(tokens: Sequence[str], span: tuple[int, int], p_restored: np.ndarray, p_corrupted: float,
                  kind: str, answer: str, window: int) -> plt.Figure:
    """ROME-style single-prompt trace: P_restored[o] per (token, layer), subject tokens starred."""
    labels = [f"{t!r}{'*' if span[0] <= i < span[1] else ''}" for i, t in enumerate(tokens)]
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(tokens) + 1.6), constrained_layout=True)
    im = ax.imshow(p_restored, aspect="auto", cmap=KIND_CMAPS[kind], vmin=min(p_corrupted, float(p_restored.min())),
                   interpolation="nearest")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("layer" + (f" (window {window})" if kind != "hidden" else ""))
    ax.set_title(f"restoring {KIND_TITLES[kind]}: P({answer!r}); corrupted = {p_corrupted:.3f}", fontsize=10)
    fig.colorbar(im, ax=ax, label=f"P({answer.strip()})")
    return fig
