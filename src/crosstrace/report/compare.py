"""Paired comparison of two runs: per-cell permutation test + BH, peaks, quotable peak ratios with CIs.

One run is a (model, modality) pair. :func:`compare_runs` computes everything ``results/compare/{a}_vs_{b}/``
holds from the two runs' ``category_ie`` and ``aie`` tables; :func:`write_comparison` writes it (table,
summary JSON, difference figure, HTML page). The statistics themselves live in :mod:`.stats`.

Pairs are (prompt, kind, category, layer) cells present in both runs. An S→T run's rows are text tokens
(``token_rows`` in its tables, from ``speech.token_rows``): with ``prompt`` they are the prompt's own T→T
tokens, so a T→T/S→T pair compares the same tokens in each subject category (S→T's last token is the
``[Text]`` marker, after every spoken token); with ``spoken`` (the paper) they are the
spoken text tokens, so a category pairs the same part of the prompt (its subject's first, middle and last
tokens, …) as each modality tokenizes it, and a prompt enters a category's cells only where both runs have
that category. :func:`token_rows_note` says which, on the page, in the figure title and in the summary.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..answers import answer_label
from ..io import write_json, write_parquet
from . import html
from .figures import category_mean_label, difference_figure, run_label, save
from .stats import Model, paired_comparison, peak_ratio_ci, peak_summary, quote_peak_ratio

__all__ = [
    "COLUMNS",
    "TEST",
    "Comparison",
    "compare_runs",
    "comparison_figure",
    "comparison_page",
    "comparison_table",
    "peak_ratios",
    "significant_by_kind",
    "token_rows_note",
    "write_comparison",
]

#: The comparison table's columns (those of :func:`.stats.paired_comparison`), also when it is empty.
COLUMNS = ["a_model", "a_modality", "b_model", "b_modality", "kind", "category", "layer", "n", "mean_a", "mean_b",
           "diff", "p", "q", "significant"]
TEST = ("two-sided permutation test of the AIE difference (a − b) over the paired prompts per (kind, category, "
        "layer), each permutation swapping the two sides of a random half of the prompts (all their positions); "
        "Benjamini–Hochberg across all cells")

_log = logging.getLogger("crosstrace")


@dataclass(frozen=True)
class Comparison:
    """What a comparison of run ``a`` against run ``b`` found (see :func:`compare_runs`)."""

    a: Model
    b: Model
    kinds: tuple[str, ...]
    table: pd.DataFrame  # paired_comparison's rows; empty (COLUMNS) when no prompt is in both runs
    peaks: pd.DataFrame  # peak_summary of both runs
    n_pairs: int  # prompts traced in both runs
    peak_ratios: dict[str, dict]  # kind → sentence, ratio, ci_low, ci_high (or None and why_not)
    by_kind: dict[str, dict]  # kind → cells, significant, n_pairs_max
    stats: Mapping  # the config's stats section: n_perm, seed, alpha, n_boot, level, category_mean
    answer_modes: tuple[str, ...] = ("top1",)  # trace.answer of the compared runs (figure title)
    token_rows: tuple[str | None, str | None] = (None, None)  # a's and b's S→T rows (None: a T→T run)

    def summary(self) -> dict:
        """The summary JSON."""
        return {
            "a": {"model": self.a[0], "modality": self.a[1], "token_rows": self.token_rows[0]},
            "b": {"model": self.b[0], "modality": self.b[1], "token_rows": self.token_rows[1]},
            "pairing": token_rows_note(self.token_rows),
            "n_pairs": self.n_pairs,
            "test": TEST,
            **{k: self.stats[k] for k in ("n_perm", "alpha", "seed", "category_mean")},
            "by_kind": self.by_kind,
            "peaks": self.peaks.replace({np.nan: None}).to_dict("records"),
            "peak_ratios": self.peak_ratios,
        }


def _run(cat: pd.DataFrame, m: Model) -> pd.Series:
    return (cat["model"] == m[0]) & (cat["modality"] == m[1])


def run_token_rows(cat: pd.DataFrame, m: Model) -> str | None:
    """Which text tokens an S→T run's rows are (``spoken`` | ``prompt``; the ``token_rows`` column of its
    category table), or None for a T→T run (its rows are its own tokens)."""
    if "token_rows" not in cat:
        return None
    rows = sorted(set(cat.loc[_run(cat, m), "token_rows"].dropna()))
    if len(rows) > 1:
        raise ValueError(f"run {m} mixes S→T token rows {rows} (tables built with different speech.token_rows)")
    return rows[0] if rows else None


def token_rows_note(token_rows: Sequence[str | None]) -> str:
    """One sentence on what a cell pairs, given each run's S→T rows (None: T→T)."""
    rows = {r for r in token_rows if r}
    if not rows:
        return "each run's rows are its own prompt tokens; cells pair prompts by category"
    if rows == {"prompt"}:
        return ("S→T rows are the prompt's own T→T tokens (speech.token_rows: prompt): the subject categories "
                "hold the same tokens in both runs (token-for-token pairing; S→T's last token is the template's token after the audio, SpiritLM's [Text])")
    if rows == {"spoken"}:
        return ("S→T rows are the spoken text tokens (speech.token_rows: spoken, the paper): a category pairs the "
                "same part of the prompt as each modality tokenizes it; prompts enter a cell where both runs "
                "have the category")
    return f"S→T rows differ between the runs ({' vs '.join(str(r) for r in token_rows)}): categories pair only loosely"


def comparison_table(cat: pd.DataFrame, a: Model, b: Model, stats: Mapping,
                     log: logging.Logger = _log) -> pd.DataFrame:
    """:func:`.stats.paired_comparison`, or an empty table with ``COLUMNS`` (reason logged) when no prompt
    was traced in both runs: an empty comparison is a result, not a failed job."""
    try:
        return paired_comparison(cat, a, b, n_perm=stats["n_perm"], seed=stats["seed"], alpha=stats["alpha"],
                                 category_mean=stats["category_mean"])
    except ValueError as e:
        log.warning("no comparison: %s", e)
        return pd.DataFrame(columns=COLUMNS)


def peak_ratios(cat: pd.DataFrame, peaks: pd.DataFrame, a: Model, b: Model, kinds: Sequence[str],
                stats: Mapping) -> dict[str, dict]:
    """Per kind, the quotable ratio of a's peak AIE to b's with its bootstrap CI (:func:`.stats.peak_ratio_ci`).

    A kind without a ratio (a non-positive peak, or no rows) gets ``None`` values and ``why_not``.
    """
    out = {}
    for kind in kinds:
        try:
            sentence = quote_peak_ratio(peaks, a, b, kind)
            r, lo, hi = peak_ratio_ci(cat, a, b, kind, n_boot=stats["n_boot"], seed=stats["seed"],
                                      level=stats["level"], category_mean=stats["category_mean"])
            out[kind] = {"sentence": f"{sentence} ({stats['level']:.0%} CI {lo:.1f}–{hi:.1f})", "ratio": r,
                         "ci_low": lo, "ci_high": hi}
        except (ValueError, KeyError) as e:
            out[kind] = {"sentence": None, "ratio": None, "ci_low": None, "ci_high": None, "why_not": str(e)}
    return out


def significant_by_kind(table: pd.DataFrame, kinds: Sequence[str]) -> dict[str, dict]:
    """Per kind: cells compared, cells with q < alpha, and the largest number of pairs in a cell."""
    out = {}
    for kind in kinds:
        sel = table["kind"] == kind
        out[kind] = {"cells": int(sel.sum()),
                     "significant": int(table.loc[sel, "significant"].sum()),
                     "n_pairs_max": int(table.loc[sel, "n"].max()) if sel.any() else 0}
    return out


def compare_runs(cat: pd.DataFrame, aie: pd.DataFrame, a: Model, b: Model, kinds: Sequence[str],
                 stats: Mapping, log: logging.Logger = _log) -> Comparison:
    """Compare run ``a`` with run ``b`` from both runs' ``category_ie`` (``cat``) and ``aie`` tables."""
    if a == b:
        raise ValueError(f"stats.compare: a and b are the same run {a}")
    table = comparison_table(cat, a, b, stats, log)
    peaks = peak_summary(aie)
    n_pairs = len(set(cat.loc[_run(cat, a), "known_id"]) & set(cat.loc[_run(cat, b), "known_id"]))
    ratios = peak_ratios(cat, peaks, a, b, kinds, stats)
    for kind, quote in ratios.items():
        log.info("%s: %s", kind, quote)
    modes = tuple(sorted(set(cat.get("answer_mode", pd.Series(["top1"])).dropna())))
    rows = (run_token_rows(cat, a), run_token_rows(cat, b))
    log.info("pairing: %s", token_rows_note(rows))
    return Comparison(a, b, tuple(kinds), table, peaks, n_pairs, ratios, significant_by_kind(table, kinds), stats,
                      modes, rows)


def comparison_figure(c: Comparison) -> Figure:
    """Heatmaps of the mean paired difference per kind, significant cells marked."""
    a, b = run_label(*c.a), run_label(*c.b)
    rows = sorted({r for r in c.token_rows if r})
    title = (f"{a} − {b}: AIE difference over the paired prompts ({category_mean_label(c.stats['category_mean'])})\n"
             f"red: {a} larger, blue: {b} larger; {c.n_pairs} prompts in both"
             + "".join(f"; {answer_label(m)}" for m in c.answer_modes)
             + "".join(f"; S→T rows: {r} text tokens" for r in rows))
    return difference_figure(c.table, c.kinds, c.stats["alpha"], title)


def comparison_page(c: Comparison) -> str:
    """The HTML page: what was compared, the quotable peak ratios, significant cells, peaks, smallest q."""
    st = c.stats
    sentences = [v["sentence"] or f"{k}: no ratio ({v['why_not']})" for k, v in c.peak_ratios.items()]
    sig = pd.DataFrame([{"kind": k, **v} for k, v in c.by_kind.items()])
    top = c.table.sort_values("q").head(15)[["kind", "category", "layer", "n", "mean_a", "mean_b", "diff", "p", "q"]]
    a, b = run_label(*c.a), run_label(*c.b)
    sections = [
        ("", html.note(f"a = {a}, b = {b}; {c.n_pairs} prompts traced in both; both sides averaged alike "
                       f"({category_mean_label(st['category_mean'])}, stats.category_mean). "
                       f"{TEST}; {st['n_perm']} permutations, significant: q < {st['alpha']:g}. "
                       f"Pairing: {token_rows_note(c.token_rows)}.")),
        ("Peak ratios (quotable)", html.bullets(sentences)),
        ("Significant cells per kind", html.table(sig)),
        ("Peaks", html.table(c.peaks)),
        ("Smallest q-values", html.table(top)),
    ]
    return html.page(f"{a} vs {b}", sections)


def write_comparison(cat_a: str | Path, cat_b: str | Path, aie_a: str | Path, aie_b: str | Path,
                     pair: Sequence[Mapping], kinds: Sequence[str], stats: Mapping, out_table: str | Path,
                     out_summary: str | Path, out_figures: Sequence[str | Path], out_html: str | Path,
                     log: logging.Logger = _log) -> Comparison:
    """Read both runs' tables, compare them and write the table, summary JSON, figures and HTML page.

    ``pair`` is the config's ``stats.compare`` entry as (a, b), each ``{"model": …, "modality": …}``.
    """
    a, b = ((spec["model"], spec["modality"]) for spec in pair)
    cat = pd.concat([pd.read_parquet(cat_a), pd.read_parquet(cat_b)], ignore_index=True)
    aie = pd.concat([pd.read_parquet(aie_a), pd.read_parquet(aie_b)], ignore_index=True)
    c = compare_runs(cat, aie, a, b, kinds, stats, log)
    write_parquet(c.table, out_table)
    write_json(c.summary(), out_summary)
    save(comparison_figure(c), list(out_figures))
    Path(out_html).write_text(comparison_page(c), encoding="utf-8")
    return c
