"""Figures for the report: log-AIE heatmaps (paper Fig. 2), CI widths, run panels, differences, QC,
and ROME-style per-prompt traces.

Rows are the six token categories (per prompt: the tokens), columns are layers. Figures are built as
:class:`matplotlib.figure.Figure` objects without pyplot, so importing this module or drawing a figure
never selects or switches the user's matplotlib backend, and the house style is applied per figure
(``rc_context``), not to the global rcParams. Nothing here imports torch or the tracer, so figure jobs
start quickly.
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator

from ..answers import answer_label
from ..vocabulary import CATEGORIES, CATEGORY_LABELS, KIND_TITLES, MODALITY_LABELS

KIND_CMAPS = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}
ABSENT_COLOUR = "#eeeeee"  # a category no prompt has (e.g. no middle subject anywhere)
WARN_COLOUR = "#b00020"

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
DPI = 200
# The Snakemake report shows a PNG at most about this wide (its content pane); text should stay at least
# MIN_TEXT_PX there, so wide figures get proportionally larger fonts (see readable()).
REPORT_WIDTH_PX = 900
MIN_TEXT_PX = 12


def styled(fn):
    """Build the figure under the house style without touching the global rcParams."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def new_figure(figsize: tuple[float, float], pyplot: bool = False) -> Figure:
    """A constrained-layout figure. ``pyplot=True`` registers it with pyplot (for ``plt.show()`` and
    notebooks' inline display); the workflow's figures never do, so no backend is ever selected."""
    if pyplot:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=figsize, layout="constrained")
    return Figure(figsize=figsize, layout="constrained")


def _texts(fig: Figure) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def fit_to_content(fig: Figure, pad: float = 0.08, rounds: int = 4) -> Figure:
    """Grow the figure until every title, label and colorbar lies inside it.

    Constrained layout shrinks axes to make room for tick labels, but a title wider than its axes (one
    kind: "...· hidden states (n = 4, ν = 0.35)") still runs off the canvas. Centred titles overflow on
    both sides, so the width grows by twice the larger overflow.
    """
    for _ in range(rounds):
        fig.draw_without_rendering()
        bb = fig.get_tightbbox()
        w, h = fig.get_size_inches()
        dx = max(0.0, -bb.x0, bb.x1 - w)
        dy = max(0.0, -bb.y0, bb.y1 - h)
        if dx <= 0.01 and dy <= 0.01:
            break
        fig.set_size_inches(w + (2 * dx + pad if dx > 0.01 else 0), h + (2 * dy + pad if dy > 0.01 else 0))
    return fig


def _signature(fig: Figure) -> tuple:
    return tuple(fig.get_size_inches()), tuple((t.get_text(), t.get_fontsize()) for t in _texts(fig))


def readable(fig: Figure, width_px: int = REPORT_WIDTH_PX, min_px: float = MIN_TEXT_PX) -> Figure:
    """Scale the fonts so body text (tick labels and up; small grey notes excepted) is at least ``min_px``
    tall when the figure is shown ``width_px`` wide (the report's content pane), and fit the figure to its
    content. Figures planned at ~10 inches or less need no scaling. Skipped when nothing changed since the
    last call (layout passes are the slow part of drawing)."""
    if getattr(fig, "_readable_signature", None) == _signature(fig):
        return fig
    fit_to_content(fig)
    body = [t for t in _texts(fig) if t.get_fontsize() >= 8.5]
    shown_px = min(t.get_fontsize() for t in body) * width_px / (fig.get_size_inches()[0] * 72) if body else min_px
    if shown_px < min_px * 0.98:
        k = min(min_px / shown_px, 1.5)
        for t in _texts(fig):
            t.set_fontsize(t.get_fontsize() * k)
        fit_to_content(fig)
    fig._readable_signature = _signature(fig)
    return fig


def token_label(token: str) -> str:
    """A token as a tick label: quoted (leading spaces visible), control characters escaped (\\n, \\t)."""
    body = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in token)
    return f"'{body}'"


def run_label(model: str, modality: str) -> str:
    return f"{model} {MODALITY_LABELS.get(modality, modality)}"


def approximate_text(meta: Mapping) -> str:
    """' — APPROXIMATE (AtP)' for a run traced by attribution patching (summary.json engine atp), else ''."""
    return " — APPROXIMATE (AtP)" if meta.get("engine") == "atp" else ""


#: how a figure names stats.category_mean (summary.json ``category_mean``)
CATEGORY_MEAN_LABELS = {"rome": "category positions pooled (ROME)", "per_prompt": "per-prompt category means"}


def category_mean_label(mode: str | None) -> str:
    """How the AIE averaged a category's positions, for titles (None: a run from before the setting, which
    averaged per prompt)."""
    mode = mode or "per_prompt"
    return CATEGORY_MEAN_LABELS.get(mode, f"category mean {mode}")


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


def _layer_ticks(ax, L: int, nbins: int = 8) -> None:
    """Layer ticks at round steps (1, 2, 5, 10, ...), at most about ``nbins`` of them, so narrow panels with
    large text keep their labels apart."""
    if L <= 3:
        ax.set_xticks(range(L))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=nbins, integer=True, steps=[1, 2, 5, 10]))
    ax.set_xlim(-0.5, L - 0.5)
    ax.set_xlabel("layer")


def _hatch(ax, mask: np.ndarray) -> int:
    """Cover masked cells with a white hatched patch; returns how many."""
    for i, j in zip(*np.nonzero(mask), strict=True):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="white", edgecolor="0.55",
                               hatch="////", lw=0))
    return int(mask.sum())


def draw_heatmap(ax, mat: np.ndarray, labels: Sequence[str], norm: LogNorm, cmap: str, title: str,
                 mask: np.ndarray | None = None, nbins: int = 8):
    """Non-positive AIE cannot be logged: those cells are drawn in the floor colour (vmin).

    ``mask``: cells to hide (e.g. CI contains 0), drawn white with grey hatching.
    """
    shown = np.where(np.isfinite(mat), np.clip(mat, norm.vmin, None), np.nan)
    cm = matplotlib.colormaps[cmap].with_extremes(bad=ABSENT_COLOUR)
    im = ax.imshow(shown, aspect="auto", norm=norm, cmap=cm, interpolation="nearest")
    if mask is not None:
        _hatch(ax, mask & np.isfinite(mat))
    ax.set_yticks(range(len(labels)), labels)
    _layer_ticks(ax, mat.shape[1], nbins)
    ax.set_title(title)
    return im


def ci_level(meta: Mapping) -> str:
    """'95%' from a summary.json's ci.level (written by the merge rule)."""
    return f"{meta.get('ci', {}).get('level', 0.95):.0%}"


def _note(fig: Figure, text: str) -> None:
    """A small grey note under the figure (a supxlabel, so constrained layout makes room for it)."""
    if text:
        fig.supxlabel(text, fontsize=8, color="0.35", x=0.01, ha="left")


def _notes(n_nonpos: int, n_masked: int | None, level: str = "95%") -> str:
    parts = []
    if n_nonpos:
        parts.append(f"{n_nonpos} cell(s) with AIE ≤ 0 drawn at the floor colour")
    if n_masked:
        parts.append(f"{n_masked} cell(s) whose {level} CI contains 0 hatched")
    return "; ".join(parts)


def _no_prompts(ax) -> None:
    """An empty run says so in the panel instead of showing a blank grey square."""
    ax.text(0.5, 0.5, "NO PROMPTS TRACED\n(see summary.json and the traced-prompts page)", transform=ax.transAxes,
            ha="center", va="center", color=WARN_COLOUR, fontsize=12, fontweight="bold")


@styled
def heatmap_figure(aie: pd.DataFrame, kind: str, meta: dict, mask_ci_zero: bool = False,
                   ci_panel: bool = False) -> Figure:
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
    fig = new_figure((7.5, 3.0 * nrows + 0.4))
    axes = fig.subplots(nrows, 1, squeeze=False)
    n = int(sub["n"].max()) if len(sub) else 0
    title = (f"{run_label(meta['model'], meta['modality'])}: log AIE, {KIND_TITLES[kind]}{approximate_text(meta)}"
             + (f" (window {meta['window']})" if kind != "hidden" and "window" in meta else "")
             + f"\nn = {n} prompts, {noise_text(meta)}; {answer_label(meta.get('answer'))}; "
             + category_mean_label(meta.get("category_mean")))
    im = draw_heatmap(axes[0, 0], mat, labels, norm, KIND_CMAPS[kind], title, mask)
    fig.colorbar(im, ax=axes[0, 0], label="AIE (log scale)")
    if n == 0:
        _no_prompts(axes[0, 0])
        for ax in axes[:, 0]:
            ax.set_xticks([])
    if ci_panel:
        width = _matrix(sub, "ci_high") - _matrix(sub, "ci_low")
        imw = draw_heatmap(axes[1, 0], width, labels, norm, "Greys",
                           f"width of the {ci_level(meta)} bootstrap CI over prompts (same log scale)")
        fig.colorbar(imw, ax=axes[1, 0], label="CI width (log scale)")
    _note(fig, _notes(n_nonpos, int((mask & np.isfinite(mat)).sum()) if mask is not None else None, ci_level(meta)))
    return readable(fig)


@styled
def panel_figure(aie: pd.DataFrame, rows: Sequence[tuple[str, str]], kinds: Sequence[str], shared_scale: bool = True,
                 meta: Mapping[tuple[str, str], Mapping] | None = None, mask_ci_zero: bool = False) -> Figure:
    """Paper layout: one row per (model, modality), one column per kind, one colour scale per column.

    ``meta``: per row, the run's summary (adds the noise scale to the row label).
    """
    meta = meta or {}
    # Width from content: the run and category labels once, then ~2.7 in per kind (30-40 layers stay legible;
    # three kinds fit the report's 900 px without scaling the text). Kinds title the columns and runs label the
    # rows, so no title is wider than its panel.
    fig = new_figure((2.0 + 2.7 * len(kinds), 2.3 * len(rows) + 0.9))
    axes = fig.subplots(len(rows), len(kinds), squeeze=False)
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
            mask = ci_zero_mask(sub) if mask_ci_zero else None
            approx = approximate_text(meta.get((m, mod), {}))
            im = draw_heatmap(axes[i, j], mats[i], aie_matrix(sub)[1], nn, KIND_CMAPS[kind],
                              KIND_TITLES[kind] if i == 0 else "", mask, nbins=5)
            if j == 0:
                nu = meta.get((m, mod), {}).get("noise_scale")
                axes[i, j].set_ylabel(f"{run_label(m, mod)}{approx}\nn = {n}"
                                      + (f", ν = {nu:.3g}" if isinstance(nu, int | float) else ""))
            if n == 0:
                _no_prompts(axes[i, j])
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
    return readable(fig)


def panel_title(meta: Mapping[tuple[str, str], Mapping]) -> str:
    """The panel figure's title from the runs' summaries: what it shows, then noise draws and window, the
    answer o and how the categories were averaged (each once when the runs agree)."""
    noise = sorted({(m.get("samples"), m.get("window")) for m in meta.values()})
    answers = sorted({answer_label(m.get("answer")) for m in meta.values()})
    means = sorted({category_mean_label(m.get("category_mean")) for m in meta.values()})
    settings = [f"{s} noise draws, window {w}" for s, w in noise] + answers + means
    return "log AIE per token category and layer\n" + "; ".join(settings)


@styled
def difference_figure(comp: pd.DataFrame, kinds: Sequence[str], alpha: float, title: str) -> Figure:
    """Mean paired difference (a − b) per kind, diverging colour scale centred at 0; q < alpha marked •.

    ``comp`` is the output of :func:`crosstrace.report.stats.paired_comparison`.
    """
    fig = new_figure((7.5, 2.7 * len(kinds) + 0.8))
    axes = fig.subplots(len(kinds), 1, squeeze=False)
    for i, kind in enumerate(kinds):
        ax = axes[i, 0]
        sub = comp[comp["kind"] == kind]
        d, labels, _ = aie_matrix(sub, "diff")
        sig = _matrix(sub, "significant") if len(sub) else np.zeros_like(d)
        lim = float(np.nanmax(np.abs(d))) if np.isfinite(d).any() else 1.0
        lim = lim if lim > 0 else 1.0
        cm = matplotlib.colormaps["RdBu_r"].with_extremes(bad=ABSENT_COLOUR)
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
    return readable(fig)


@styled
def counts_figure(counts: pd.DataFrame, title: str) -> Figure:
    """Horizontal bars: prompts left after each filtering stage (``counts`` has stage, count)."""
    fig = new_figure((6.5, 0.45 * len(counts) + 1.2))
    ax = fig.subplots()
    y = np.arange(len(counts))
    ax.barh(y, counts["count"], color="#4c72b0")
    for yi, c in zip(y, counts["count"], strict=True):
        ax.text(c, yi, f" {c}", va="center", fontsize=9)
    ax.set_yticks(y, counts["stage"])
    ax.invert_yaxis()
    ax.set_xlabel("prompts")
    ax.set_xlim(0, max(1, counts["count"].max()) * 1.15)
    ax.set_title(title)
    return readable(fig)


def save(fig: Figure, paths: Sequence[str | Path]) -> None:
    """Write ``fig`` to every path (format from the suffix), refitted after late additions such as a
    suptitle, then release it (pyplot-managed figures are closed)."""
    with matplotlib.rc_context(STYLE):
        readable(fig)
        for p in paths:
            Path(p).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(p, dpi=DPI)
    if fig.canvas.manager is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)


def _prob_text(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


@styled
def prompt_trace_figure(tokens: Sequence[str], span: tuple[int, int], p_restored: Mapping[str, np.ndarray],
                        answer: str, p_clean: float, p_corrupted: float, window: int | None = None,
                        title: str = "", attribute: str | None = None, answer_ok: bool | None = None,
                        pyplot: bool = False, answer_mode: str = "top1") -> Figure:
    """ROME-style trace of one prompt: one panel per kind, token rows, layer columns.

    Colour is P_restored[o] for the answer o (``answer_mode``, trace.answer: by default the clean greedy
    token; or the attribute's first token, or all its tokens teacher-forced) with the corrupted input's
    state at that token, or a window of sublayer outputs, restored; the colour bar marks P_corrupted
    (dashed) and P_clean (solid). Subject tokens are starred. The title gives the answer and what it is,
    P_clean and P_corrupted, and flags a prompt whose corruption does not lower P(o) or whose answer does
    not start ``attribute``.
    """
    kinds = list(p_restored)
    T = len(tokens)
    L = np.asarray(next(iter(p_restored.values()))).shape[1]
    labels = [token_label(t) + (" *" if span[0] <= i < span[1] else "") for i, t in enumerate(tokens)]
    # ~2.6 in per kind: three kinds stay near 9 in, so the text stays legible where the report shows the
    # figure 800-900 px wide.
    fig = new_figure((1.2 + 2.6 * len(kinds), 0.24 * T + 1.9), pyplot=pyplot)
    axes = fig.subplots(1, len(kinds), squeeze=False, sharey=True)[0]
    for ax, kind in zip(axes, kinds, strict=True):
        p = np.asarray(p_restored[kind], dtype=float)
        vmin = min(p_corrupted, float(np.nanmin(p)))
        vmax = max(p_clean, float(np.nanmax(p)), vmin + 1e-9)
        im = ax.imshow(p, aspect="auto", cmap=KIND_CMAPS.get(kind, "Greys"), vmin=vmin, vmax=vmax,
                       interpolation="nearest")
        ax.set_title(f"restoring {KIND_TITLES.get(kind, kind)}"
                     + (f" (window {window})" if window and kind != "hidden" else ""))
        _layer_ticks(ax, L, nbins=5)
        cb = fig.colorbar(im, ax=ax, shrink=min(1.0, 0.4 + 0.05 * T))
        cb.set_label("P(o) restored")
        cb.ax.axhline(p_corrupted, color="0.15", lw=1.2, ls="--")
        cb.ax.axhline(p_clean, color="0.15", lw=1.2)
    axes[0].set_yticks(range(T), labels)
    for i, lab in enumerate(axes[0].get_yticklabels()):
        if span[0] <= i < span[1]:
            lab.set_fontweight("bold")
    for ax in axes[1:]:
        ax.tick_params(labelleft=False)
    head = "\n".join(textwrap.wrap(title, 90)) if title else ""
    stats = (f"answer o = {token_label(answer)}" + (f" (attribute {attribute!r})" if attribute else "")
             + f": P_clean = {_prob_text(p_clean)}, P_corrupted = {_prob_text(p_corrupted)}; {answer_label(answer_mode)}")
    flags = []
    if p_corrupted >= p_clean:
        flags.append("corruption does not lower P(o)")
    if answer_ok is False:
        who = "o" if answer_mode == "top1" else "the greedy answer"  # attribute modes: o is the attribute
        flags.append(f"{who} does not start the attribute {attribute!r}" if attribute else f"{who} is not the expected answer")
    fig.suptitle("\n".join(x for x in (head, stats) if x))
    if flags:
        fig.supxlabel("FLAG: " + "; ".join(flags), color=WARN_COLOUR, fontsize=10, fontweight="bold")
    return readable(fig)


def _unit_token_label(t: str) -> str:
    """A text token's piece as a label: SentencePiece's ``▁`` and byte-level BPE's ``Ġ`` are spaces."""
    return t.replace("▁", " ").replace("Ġ", " ").strip() or t


@styled
def unit_figure(view: pd.DataFrame, kind: str, title: str, max_prompts: int = 4) -> Figure:
    """S→T IE per audio position (a view the paper does not have; SpiritLM: per speech unit, Qwen2-Audio: per
    encoder frame): for the first ``max_prompts`` prompts of ``view`` (:func:`crosstrace.trace.tables.unit_view`),
    IE by LM position (x, from the first audio position to the last token, SpiritLM's ``[Text]``) and layer (y),
    with the text-token boundaries drawn and labelled (subject tokens in red),
    and the silence before the first and after the last word, and pauses between words that no token owns,
    shaded. Diverging colours centred at 0."""
    sub = view[view["kind"] == kind]
    kids = sorted(sub["known_id"].unique())[:max_prompts]
    fig = new_figure((9, 2.6 * max(1, len(kids)) + 0.6))
    axes = fig.subplots(max(1, len(kids)), 1, squeeze=False)
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
        for r in pos[pos["region"].isin(["silence", "pause"])].itertuples():
            ax.axvspan(r.token_index - 0.5, r.token_index + 0.5, color="#bbbbbb", alpha=0.6, lw=0)
        owned = pos[pos["region"] == "token"]
        b, e = int(g["subject_start"].iloc[0]), int(g["subject_end"].iloc[0])  # LM positions of the subject's units
        for _, tk in owned.groupby("text_token_index", sort=True):
            x0, x1 = int(tk["token_index"].min()), int(tk["token_index"].max())
            ax.axvline(x0 - 0.5, color="black", lw=0.6)
            colour = "red" if b <= x0 < e else "black"
            ax.text((x0 + x1) / 2, L - 0.5, _unit_token_label(str(tk["text_token"].iloc[0])), rotation=90, ha="center",
                    va="bottom", fontsize=7, color=colour)
        if len(owned):
            ax.axvline(int(owned["token_index"].max()) + 0.5, color="black", lw=0.6)
        ax.set_ylabel("layer")
        last = g.loc[g["region"] == "last", "token"]
        ax.set_xlabel(f"LM position (speech units / audio frames; last = {last.iloc[0] if len(last) else '[Text]'}) "
                      f"· known_id {kid}")
        fig.colorbar(im, ax=ax, label="IE", pad=0.01)
    fig.suptitle(f"{title} · {KIND_TITLES.get(kind, kind)}: IE per audio position; lines = text-token boundaries, "
                 "red = subject, grey = silence or pause (no token)", fontsize=9)
    return readable(fig)
