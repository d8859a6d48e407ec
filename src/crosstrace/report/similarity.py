"""Cross-modal representation similarity: text vs speech states of the same prompt, per layer.

Pure statistics and report output. The states come from :func:`crosstrace.representations.matched_states`
(one clean pass per modality of every prompt in both Known sets); this module compares them at matched
positions — cosine and L2 with a matched-random baseline and bootstrap CIs over prompts (the bootstrap of
:mod:`.stats`) — and writes the table, line plot and HTML page (:func:`write_similarity`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..io import write_parquet
from . import html
from .stats import bootstrap_cell_means, percentile_ci

__all__ = [
    "POSITION_LABELS",
    "SIMILARITY_COLUMNS",
    "TOKEN_ROWS_LABELS",
    "States",
    "cosine_and_l2",
    "plot_similarity_by_layer",
    "random_partners",
    "similarity_by_layer",
    "similarity_long",
    "similarity_page",
    "write_similarity",
]

RngLike = np.random.Generator | int | None

#: What each matched position (``crosstrace.representations.POSITIONS``) pairs, for captions and pages.
POSITION_LABELS = {"subject": "last subject token ↔ last subject unit", "last": "last token ↔ last token ([Text])"}
#: What the S→T side of the subject position is, by ``speech.token_rows`` (the known table's ``token_rows``).
TOKEN_ROWS_LABELS = {
    "spoken": "the last subject unit is the last unit of the subject's last spoken text token (speech.token_rows: "
              "spoken, the paper), the end of the same subject, which the spoken text may write differently "
              "(\"2\" → \"two\")",
    "prompt": "the last subject unit is the last unit of the same text token as T→T's last subject token "
              "(speech.token_rows: prompt, token-for-token)",
}

_log = logging.getLogger("crosstrace")


def _as_rng(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


# --------------------------------------------------------------------------------------------
# statistics


def cosine_and_l2(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rowwise cosine similarity and Euclidean (L2) distance along the last axis.

    ``x`` and ``y`` have the same shape (n, d) (any leading dims work); computed in float64.
    Cosine is NaN where either vector has zero norm.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch {x.shape} vs {y.shape}")
    dot = np.einsum("...d,...d->...", x, y)
    nx = np.linalg.norm(x, axis=-1)
    ny = np.linalg.norm(y, axis=-1)
    denom = nx * ny
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), np.nan)
    l2 = np.linalg.norm(x - y, axis=-1)
    return cos, l2


def random_partners(n_prompts: int, n_random: int, rng: RngLike) -> np.ndarray:
    """(n_random, n_prompts) partner indices: row r, column i is a prompt ≠ i, uniform over the rest.

    Built as (i + U) mod n with U uniform on {1, …, n−1}, so a prompt is never its own partner.
    Partners are drawn independently per prompt (several prompts may share a partner).
    """
    if n_prompts < 2:
        raise ValueError("a random baseline needs at least 2 prompts")
    g = _as_rng(rng)
    shift = g.integers(1, n_prompts, size=(n_random, n_prompts))
    return (np.arange(n_prompts)[None, :] + shift) % n_prompts


def similarity_by_layer(
    text_states: np.ndarray,
    speech_states: np.ndarray,
    rng: RngLike,
    n_random: int = 20,
    n_boot: int = 1000,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per-layer text-vs-speech similarity of matched states, with a matched-random baseline.

    Inputs are arrays (prompts × layers × hidden) whose [i, l] rows are the same prompt's state at
    matched positions in the two modalities. Per layer l:

    * ``cos`` / ``l2``: mean over prompts of cosine / Euclidean distance between
      text[i, l] and speech[i, l].
    * Baseline (``random_cos`` / ``random_l2``): for each of ``n_random`` draws, every prompt i
      gets a partner j ≠ i drawn uniformly from the other prompts (:func:`random_partners`), and
      text[i, l] is compared with speech[j, l] — same layer, different prompt. The partner of i in
      a draw is the same at every layer. Per prompt the baseline is the average over draws; the
      reported value is the mean over prompts. It answers "how similar is a text state to some
      speech state of the same layer that is not its own prompt".
    * ``cos_minus_random`` / ``l2_minus_random``: matched minus baseline.
    * CIs (``*_ci_low``/``*_ci_high``): percentile bootstrap over prompts (``n_boot`` resamples
      shared by all layers and columns; the baseline partners are held fixed).

    ``rng`` is a Generator or a seed; partners are drawn first, then the bootstrap. Returns one
    row per layer with columns layer, n, then value/ci_low/ci_high triples for the six measures.
    """
    t = np.asarray(text_states)
    s = np.asarray(speech_states)
    if t.shape != s.shape or t.ndim != 3:
        raise ValueError(f"need equal (prompts, layers, hidden) arrays, got {t.shape} and {s.shape}")
    g = _as_rng(rng)
    n_p, n_l, _ = t.shape
    partners = random_partners(n_p, n_random, g)
    vals = {k: np.empty((n_p, n_l)) for k in ("cos", "l2", "random_cos", "random_l2")}
    for layer in range(n_l):
        tl = t[:, layer].astype(np.float64)
        sl = s[:, layer].astype(np.float64)
        vals["cos"][:, layer], vals["l2"][:, layer] = cosine_and_l2(tl, sl)
        rc = np.zeros(n_p)
        rl = np.zeros(n_p)
        for r in range(n_random):
            c, d = cosine_and_l2(tl, sl[partners[r]])
            rc += c
            rl += d
        vals["random_cos"][:, layer] = rc / n_random
        vals["random_l2"][:, layer] = rl / n_random
    vals["cos_minus_random"] = vals["cos"] - vals["random_cos"]
    vals["l2_minus_random"] = vals["l2"] - vals["random_l2"]
    names = list(vals)
    # One (prompts × (measures·layers)) matrix so all measures share the same resamples.
    V = np.concatenate([vals[k] for k in names], axis=1)
    boot = bootstrap_cell_means(V, n_boot, g)
    lo, hi = percentile_ci(boot, level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        point = np.nanmean(V, axis=0)
    out = pd.DataFrame({"layer": np.arange(n_l), "n": np.isfinite(vals["cos"]).sum(0)})
    for k_i, k in enumerate(names):
        sl_ = slice(k_i * n_l, (k_i + 1) * n_l)
        out[k], out[f"{k}_ci_low"], out[f"{k}_ci_high"] = point[sl_], lo[sl_], hi[sl_]
    out.attrs["baseline"] = (
        f"matched-random: each prompt's text state vs the speech state of a different prompt, "
        f"drawn uniformly, same layer; {n_random} draws averaged per prompt"
    )
    return out


SIMILARITY_COLUMNS = [
    "layer", "position", "metric", "n", "mean", "ci_low", "ci_high",
    "baseline_mean", "baseline_ci_low", "baseline_ci_high", "diff_mean", "diff_ci_low", "diff_ci_high",
]


def similarity_long(by_position: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Stack :func:`similarity_by_layer` tables (position → table) into one row per (position, metric, layer).

    Columns ``SIMILARITY_COLUMNS``: ``metric`` is ``cos`` or ``l2``; ``mean`` / ``ci_low`` / ``ci_high`` the
    matched pairs' mean and CI; ``baseline_*`` the matched-random baseline; ``diff_*`` matched − baseline
    (paired per prompt). Rows follow the mapping's position order, then cos, l2, then layer.
    """
    parts = []
    for position, wide in by_position.items():
        for metric in ("cos", "l2"):
            part = pd.DataFrame({"layer": wide["layer"], "position": position, "metric": metric, "n": wide["n"]})
            for prefix, src in (("", metric), ("baseline_", f"random_{metric}"), ("diff_", f"{metric}_minus_random")):
                part[f"{prefix}mean"] = wide[src]
                part[f"{prefix}ci_low"] = wide[f"{src}_ci_low"]
                part[f"{prefix}ci_high"] = wide[f"{src}_ci_high"]
            parts.append(part)
    if not parts:
        return pd.DataFrame(columns=SIMILARITY_COLUMNS)
    return pd.concat(parts, ignore_index=True)[SIMILARITY_COLUMNS]


# --------------------------------------------------------------------------------------------
# figure

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

    ``sim`` is the output of :func:`similarity_by_layer`, or a mapping
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


# --------------------------------------------------------------------------------------------
# the report step


class States(Protocol):
    """The matched states of one model (filled by :func:`crosstrace.representations.matched_states`)."""

    known_ids: list[int]  # the prompts used, row i of every array
    text: Mapping[str, np.ndarray]  # position → (prompts, layers, hidden) T→T block outputs
    speech: Mapping[str, np.ndarray]  # position → the S→T block outputs at the matched positions
    positions: pd.DataFrame  # token positions used per prompt
    skipped: list[tuple[int, str]]  # (known_id, reason) of the prompts without a subject span
    token_rows: str | None  # the S→T text tokens the subject's units come from (speech.token_rows)


def _rows_label(states: States) -> str:
    rows = getattr(states, "token_rows", None)
    return TOKEN_ROWS_LABELS.get(rows, "S→T token rows not recorded")


def similarity_page(model: str, n_shared: int, states: States, table: pd.DataFrame, why_empty: str,
                    stats: Mapping) -> str:
    """The HTML page: prompts used and how, skipped prompts, the per-layer table (or why it is empty)."""
    level = f"{stats['level']:.0%}"
    sections = [
        (
            "",
            html.note(
                f"Prompts in both Known sets: {n_shared}; used: {len(states.known_ids)} (a prompt known in one "
                f"modality only is not used). Layer l = output of block l. Positions: subject = "
                f"{POSITION_LABELS['subject']} ({_rows_label(states)}); last = {POSITION_LABELS['last']}. "
                f"mean: over prompts; CIs: "
                f"{level} percentile bootstrap over prompts ({stats['n_boot']} resamples). baseline: each "
                f"prompt's text state against the speech state of another prompt drawn at random, same layer "
                f"and position ({stats['n_random']} draws averaged); diff = matched − baseline."
            ),
        ),
        ("Skipped prompts", html.bullets(r for _, r in states.skipped) if states.skipped else html.note("none")),
        ("Per layer", html.table(table.drop(columns=["model", "token_rows"])) if len(table) else html.note(why_empty)),
        ("Token positions", html.table(states.positions)),
    ]
    return html.page(f"{model}: text vs speech representations", sections)


def write_similarity(model: str, states: States, n_shared: int, stats: Mapping, out_table: str | Path,
                     out_html: str | Path, out_figures: Sequence[str | Path],
                     log: logging.Logger = _log) -> pd.DataFrame:
    """Per-layer similarity of one model's matched states: table, line plot (one file per path) and page.

    The table starts with ``model`` and ``token_rows`` (which S→T text tokens the subject's units come
    from, ``speech.token_rows``), then ``SIMILARITY_COLUMNS``. ``n_shared`` is the number of prompts in both Known sets (``states`` may hold fewer: prompts without a
    subject span are skipped); ``stats`` holds seed, n_random, n_boot, level. Position i draws from the
    generator seeded (seed, i). With fewer than 2 prompts (the random baseline needs two) the table is
    empty with ``SIMILARITY_COLUMNS``, and the figure and page say why. Returns the table.
    """
    n = len(states.known_ids)
    wides: dict[str, pd.DataFrame] = {}
    if n >= 2:
        for i, pos in enumerate(states.text):
            wides[pos] = similarity_by_layer(
                states.text[pos],
                states.speech[pos],
                np.random.default_rng([stats["seed"], i]),
                n_random=stats["n_random"],
                n_boot=stats["n_boot"],
                level=stats["level"],
            )
        table = similarity_long(wides)
        why_empty = ""
    else:
        why_empty = f"{n} prompt(s) in both sets with a subject span; the random baseline needs at least 2"
        log.warning("no similarity table: %s", why_empty)
        table = pd.DataFrame(columns=SIMILARITY_COLUMNS)
    table.insert(0, "model", model)
    table.insert(1, "token_rows", getattr(states, "token_rows", None))
    write_parquet(table, out_table)

    figures = [Path(f) for f in out_figures]
    rows = getattr(states, "token_rows", None)
    title = (f"{model}: T→T vs S→T block outputs, {n} prompts in both sets"
             + (f" (S→T subject: {rows} text tokens)" if rows else ""))
    if wides:
        plot_similarity_by_layer(
            {POSITION_LABELS[pos]: w for pos, w in wides.items()},
            figures[0].with_suffix(""),
            title=title,
            formats=[f.suffix[1:] for f in figures],
        )
    else:
        fig = Figure(figsize=(7, 2))
        fig.text(0.5, 0.5, f"{title}\nno similarity: {why_empty}", ha="center", va="center")
        for f in figures:
            fig.savefig(f)

    Path(out_html).write_text(similarity_page(model, n_shared, states, table, why_empty, stats), encoding="utf-8")
    return table
