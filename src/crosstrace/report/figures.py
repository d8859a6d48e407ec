"""Figures for the report: log-AIE heatmaps (paper Fig. 2), CI widths, run panels, differences, QC.

Rows are the six token categories, columns are layers. Everything here is matplotlib on the Agg / PDF
backends and imports neither torch nor the tracer, so figure jobs start quickly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm, TwoSlopeNorm  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from ..categories import CATEGORIES, CATEGORY_LABELS  # noqa: E402

KIND_TITLES = {"hidden": "hidden states", "mlp": "MLP", "attn": "attention"}
KIND_CMAPS = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}
MODALITY_LABELS = {"t2t": "T→T", "s2t": "S→T"}
ABSENT_COLOUR = "#eeeeee"  # a category no prompt has (e.g. no middle subject anywhere)

# Publication defaults: readable sizes at print width, TrueType (editable) text in PDFs.
STYLE = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 11,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "savefig.dpi": 200,
}
matplotlib.rcParams.update(STYLE)


def run_label(model: str, modality: str) -> str:
    return f"{model} {MODALITY_LABELS.get(modality, modality)}"


def approximate_text(meta: Mapping) -> str:
    """' — APPROXIMATE (AtP)' for a run traced by attribution patching (summary.json engine atp), else ''."""
    return " — APPROXIMATE (AtP)" if meta.get("engine") == "atp" else ""


def noise_text(meta: Mapping) -> str:
    """'noise ν = 0.35 × 10 draws' from a run's summary.json (ν unknown when nothing was traced)."""
    nu = meta.get("noise_scale")
    nu_s = f"{nu:.3g}" if isinstance(nu, int | float) else "n/a"
    return f"noise ν = {nu_s}, {meta.get('samples', '?')} draws"


def _matrix(aie: pd.DataFrame, col: str) -> np.ndarray:
    L = int(aie["layer"].max()) + 1 if len(aie) else 1
    mat = np.full((len(CATEGORIES), L), np.nan)
    for i, c in enumerate(CATEGORIES):
        g = aie[aie["category"] == c]
        mat[i, g["layer"].to_numpy(int)] = g[col].to_numpy(float)
    return mat


def aie_matrix(aie: pd.DataFrame, col: str = "aie") -> tuple[np.ndarray, list[str], int]:
    """(categories × layers) values of ``col`` for one (model, modality, kind); NaN for absent categories."""
    mat = _matrix(aie, col)
    return mat, [CATEGORY_LABELS[c] for c in CATEGORIES], mat.shape[1]


def ci_zero_mask(aie: pd.DataFrame) -> np.ndarray:
    """True where the bootstrap CI contains 0 (ci_low ≤ 0 ≤ ci_high); False without CI columns."""
    if not {"ci_low", "ci_high"} <= set(aie.columns):
        return np.zeros(_matrix(aie, "aie").shape, dtype=bool)
    lo, hi = _matrix(aie, "ci_low"), _matrix(aie, "ci_high")
    with np.errstate(invalid="ignore"):
        return (lo <= 0) & (hi >= 0)


def log_norm(values: np.ndarray) -> tuple[LogNorm, int]:
    """A log colour scale over the positive cells; returns the norm and the count of non-positive cells."""
    finite = values[np.isfinite(values)]
    pos = finite[finite > 0]
    lo = float(pos.min()) if pos.size else 1e-6
    hi = float(pos.max()) if pos.size else 1e-5
    if hi <= lo:
        hi = lo * 10
    return LogNorm(vmin=lo, vmax=hi), int((finite <= 0).sum())


def _layer_ticks(ax, L: int) -> None:
    step = max(1, int(np.ceil(L / 10)))
    ax.set_xticks(range(0, L, step))
    ax.set_xlabel("layer")


def _hatch(ax, mask: np.ndarray) -> int:
    """Cover masked cells with a white hatched patch; returns how many."""
    for i, j in zip(*np.nonzero(mask), strict=True):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="white", edgecolor="0.55",
                               hatch="////", lw=0))
    return int(mask.sum())


def draw_heatmap(ax, mat: np.ndarray, labels: Sequence[str], norm: LogNorm, cmap: str, title: str,
                 mask: np.ndarray | None = None):
    """Non-positive AIE cannot be logged: those cells are drawn in the floor colour (vmin).

    ``mask``: cells to hide (e.g. CI contains 0), drawn white with grey hatching.
    """
    shown = np.where(np.isfinite(mat), np.clip(mat, norm.vmin, None), np.nan)
    cm = plt.get_cmap(cmap).with_extremes(bad=ABSENT_COLOUR)
    im = ax.imshow(shown, aspect="auto", norm=norm, cmap=cm, interpolation="nearest")
    if mask is not None:
        _hatch(ax, mask & np.isfinite(mat))
    ax.set_yticks(range(len(labels)), labels)
    _layer_ticks(ax, mat.shape[1])
    ax.set_title(title)
    return im


def ci_level(meta: Mapping) -> str:
    """'95%' from a summary.json's ci.level (written by the merge rule)."""
    return f"{meta.get('ci', {}).get('level', 0.95):.0%}"


def _note(fig: plt.Figure, text: str) -> None:
    """A small grey note under the figure (a supxlabel, so constrained layout makes room for it)."""
    if text:
        fig.supxlabel(text, fontsize=7, color="0.35", x=0.01, ha="left")


def _notes(n_nonpos: int, n_masked: int | None, level: str = "95%") -> str:
    parts = []
    if n_nonpos:
        parts.append(f"{n_nonpos} cell(s) with AIE ≤ 0 drawn at the floor colour")
    if n_masked:
        parts.append(f"{n_masked} cell(s) whose {level} CI contains 0 hatched")
    return "; ".join(parts)


def heatmap_figure(aie: pd.DataFrame, kind: str, meta: dict, mask_ci_zero: bool = False,
                   ci_panel: bool = False) -> plt.Figure:
    """One kind for one model and modality, readable on its own.

    ``ci_panel`` adds a lower panel with the bootstrap CI width (ci_high − ci_low) on the *same* log
    colour scale (grey), so a cell whose width is as dark as its AIE is poorly determined.
    """
    sub = aie[aie["kind"] == kind]
    mat, labels, _ = aie_matrix(sub)
    norm, n_nonpos = log_norm(mat)
    has_ci = {"ci_low", "ci_high"} <= set(sub.columns)
    ci_panel = ci_panel and has_ci
    mask = ci_zero_mask(sub) if mask_ci_zero else None
    nrows = 2 if ci_panel else 1
    fig, axes = plt.subplots(nrows, 1, figsize=(7.5, 3.0 * nrows + 0.4), constrained_layout=True, squeeze=False)
    n = int(sub["n"].max()) if len(sub) else 0
    title = (f"{run_label(meta['model'], meta['modality'])}: log AIE, {KIND_TITLES[kind]}{approximate_text(meta)}"
             + (f" (window {meta['window']})" if kind != "hidden" and "window" in meta else "")
             + f"\nn = {n} prompts, {noise_text(meta)}")
    im = draw_heatmap(axes[0, 0], mat, labels, norm, KIND_CMAPS[kind], title, mask)
    fig.colorbar(im, ax=axes[0, 0], label="AIE (log scale)")
    if ci_panel:
        width = _matrix(sub, "ci_high") - _matrix(sub, "ci_low")
        imw = draw_heatmap(axes[1, 0], width, labels, norm, "Greys",
                           f"width of the {ci_level(meta)} bootstrap CI over prompts (same log scale)")
        fig.colorbar(imw, ax=axes[1, 0], label="CI width (log scale)")
    _note(fig, _notes(n_nonpos, int((mask & np.isfinite(mat)).sum()) if mask is not None else None, ci_level(meta)))
    return fig


def panel_figure(aie: pd.DataFrame, rows: Sequence[tuple[str, str]], kinds: Sequence[str], shared_scale: bool = True,
                 meta: Mapping[tuple[str, str], Mapping] | None = None, mask_ci_zero: bool = False) -> plt.Figure:
    """Paper layout: one row per (model, modality), one column per kind, one colour scale per column.

    ``meta``: per row, the run's summary (adds the noise scale to the panel titles).
    """
    meta = meta or {}
    fig, axes = plt.subplots(len(rows), len(kinds), figsize=(4.6 * len(kinds), 2.5 * len(rows) + 0.8),
                             constrained_layout=True, squeeze=False)
    notes = []
    for j, kind in enumerate(kinds):
        col = aie[aie["kind"] == kind]
        subs = [col[(col["model"] == m) & (col["modality"] == mod)] for m, mod in rows]
        mats = [aie_matrix(s)[0] for s in subs]
        norm, _ = log_norm(np.concatenate([x.ravel() for x in mats])) if shared_scale else (None, 0)
        im = None
        for i, (m, mod) in enumerate(rows):
            sub = subs[i]
            n = int(sub["n"].max()) if len(sub) else 0
            nn = norm or log_norm(mats[i])[0]
            extra = f", ν = {meta[(m, mod)]['noise_scale']:.3g}" if isinstance(
                meta.get((m, mod), {}).get("noise_scale"), int | float) else ""
            mask = ci_zero_mask(sub) if mask_ci_zero else None
            approx = approximate_text(meta.get((m, mod), {}))
            im = draw_heatmap(axes[i, j], mats[i], aie_matrix(sub)[1], nn, KIND_CMAPS[kind],
                              f"{run_label(m, mod)} · {KIND_TITLES[kind]} (n = {n}{extra}){approx}", mask)
            n_nonpos = int((mats[i][np.isfinite(mats[i])] <= 0).sum())
            if n_nonpos:
                notes.append(f"{run_label(m, mod)} {kind}: {n_nonpos}")
            if j > 0:
                axes[i, j].set_yticklabels([])
            if i < len(rows) - 1:
                axes[i, j].set_xlabel("")
        fig.colorbar(im, ax=axes[:, j], shrink=0.8, label="AIE (log scale)")
    if notes:
        _note(fig, "cells with AIE ≤ 0 (floor colour): " + ", ".join(notes)
              + ("; hatched: CI contains 0" if mask_ci_zero else ""))
    return fig


def difference_figure(comp: pd.DataFrame, kinds: Sequence[str], alpha: float, title: str) -> plt.Figure:
    """Mean paired difference (a − b) per kind, diverging colour scale centred at 0; q < alpha marked •.

    ``comp`` is the output of :func:`crosstrace.report.stats.paired_comparison`.
    """
    fig, axes = plt.subplots(len(kinds), 1, figsize=(7.5, 2.7 * len(kinds) + 0.8), constrained_layout=True,
                             squeeze=False)
    for i, kind in enumerate(kinds):
        ax = axes[i, 0]
        sub = comp[comp["kind"] == kind]
        d, labels, _ = aie_matrix(sub, "diff")
        sig = _matrix(sub, "significant") if len(sub) else np.zeros_like(d)
        lim = float(np.nanmax(np.abs(d))) if np.isfinite(d).any() else 1.0
        lim = lim if lim > 0 else 1.0
        cm = plt.get_cmap("RdBu_r").with_extremes(bad=ABSENT_COLOUR)
        im = ax.imshow(d, aspect="auto", cmap=cm, norm=TwoSlopeNorm(0.0, -lim, lim), interpolation="nearest")
        yy, xx = np.nonzero(np.nan_to_num(sig) > 0)
        ax.scatter(xx, yy, s=10, c="black", marker="o", linewidths=0)
        ax.set_yticks(range(len(labels)), labels)
        _layer_ticks(ax, d.shape[1])
        n = int(sub["n"].max()) if len(sub) else 0
        ax.set_title(f"{KIND_TITLES.get(kind, kind)}: n = {n} paired prompts, "
                     f"{int(np.nansum(sig))} cell(s) with q < {alpha:g} (•)")
        fig.colorbar(im, ax=ax, label="mean IE difference")
    fig.suptitle(title)
    return fig


def counts_figure(counts: pd.DataFrame, title: str) -> plt.Figure:
    """Horizontal bars: prompts left after each filtering stage (``counts`` has stage, count)."""
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(counts) + 1.2), constrained_layout=True)
    y = np.arange(len(counts))
    ax.barh(y, counts["count"], color="#4c72b0")
    for yi, c in zip(y, counts["count"], strict=True):
        ax.text(c, yi, f" {c}", va="center", fontsize=9)
    ax.set_yticks(y, counts["stage"])
    ax.invert_yaxis()
    ax.set_xlabel("prompts")
    ax.set_xlim(0, max(1, counts["count"].max()) * 1.15)
    ax.set_title(title)
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


def _token_label(t: str) -> str:
    return t.replace("▁", " ").strip() or "▁"


def unit_figure(view: pd.DataFrame, kind: str, title: str, max_prompts: int = 4) -> plt.Figure:
    """S→T IE per speech unit (a view the paper does not have): for the first ``max_prompts`` prompts of
    ``view`` (:func:`crosstrace.trace.tables.unit_view`), IE by LM position (x, from the first unit to
    ``[Text]``) and layer (y), with the text-token boundaries drawn and labelled (subject tokens in red),
    and the silence before the first and after the last word shaded. Diverging colours centred at 0."""
    sub = view[view["kind"] == kind]
    kids = sorted(sub["known_id"].unique())[:max_prompts]
    fig, axes = plt.subplots(max(1, len(kids)), 1, figsize=(9, 2.6 * max(1, len(kids)) + 0.6),
                             constrained_layout=True, squeeze=False)
    if not kids:
        axes[0, 0].set_axis_off()
        axes[0, 0].text(0.5, 0.5, "no S→T prompt traced", ha="center", va="center")
    for ax, kid in zip(axes[:, 0], kids, strict=False):
        g = sub[sub["known_id"] == kid]
        first = int(g.loc[g["region"] != "marker", "token_index"].min())
        T, L = int(g["n_tokens"].iloc[0]), int(g["layer"].max()) + 1
        mat = np.full((L, T - first), np.nan)
        keep = g[g["token_index"] >= first]
        mat[keep["layer"].to_numpy(), keep["token_index"].to_numpy() - first] = keep["ie"].to_numpy()
        lim = float(np.nanmax(np.abs(mat))) if np.isfinite(mat).any() else 1.0
        lim = lim if lim > 0 else 1.0
        im = ax.imshow(mat, aspect="auto", origin="lower", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim),
                       interpolation="nearest", extent=(first - 0.5, T - 0.5, -0.5, L - 0.5))
        pos = g.drop_duplicates("token_index").sort_values("token_index")
        for r in pos[pos["region"] == "silence"].itertuples():
            ax.axvspan(r.token_index - 0.5, r.token_index + 0.5, color="#bbbbbb", alpha=0.6, lw=0)
        owned = pos[pos["region"] == "token"]
        b, e = int(g["subject_start"].iloc[0]), int(g["subject_end"].iloc[0])  # LM positions of the subject's units
        for _, tk in owned.groupby("text_token_index", sort=True):
            x0, x1 = int(tk["token_index"].min()), int(tk["token_index"].max())
            ax.axvline(x0 - 0.5, color="black", lw=0.6)
            colour = "red" if b <= x0 < e else "black"
            ax.text((x0 + x1) / 2, L - 0.5, _token_label(str(tk["text_token"].iloc[0])), rotation=90, ha="center",
                    va="bottom", fontsize=7, color=colour)
        if len(owned):
            ax.axvline(int(owned["token_index"].max()) + 0.5, color="black", lw=0.6)
        ax.set_ylabel("layer")
        ax.set_xlabel(f"LM position (speech units; last = [Text]) · known_id {kid}")
        fig.colorbar(im, ax=ax, label="IE", pad=0.01)
    fig.suptitle(f"{title} · {KIND_TITLES.get(kind, kind)}: IE per speech unit; lines = text-token boundaries, "
                 "red = subject, grey = silence (no token)", fontsize=9)
    return fig
