"""Paired comparison of two runs: per-cell permutation test + BH, peaks and quotable peak ratios."""

from pathlib import Path

import numpy as np
import pandas as pd

from crosstrace.answers import answer_label
from crosstrace.io import setup_logging, write_json, write_parquet
from crosstrace.report import html
from crosstrace.report.figures import difference_figure, run_label, save
from crosstrace.report.stats import paired_comparison, peak_ratio_ci, peak_summary, quote_peak_ratio

log = setup_logging(snakemake.log[0])
i, out, p = snakemake.input, snakemake.output, snakemake.params
st = p.stats
a_spec, b_spec = p.pair
a, b = (a_spec["model"], a_spec["modality"]), (b_spec["model"], b_spec["modality"])
cat = pd.concat([pd.read_parquet(i.cat_a), pd.read_parquet(i.cat_b)], ignore_index=True)
aie = pd.concat([pd.read_parquet(i.aie_a), pd.read_parquet(i.aie_b)], ignore_index=True)
if a == b:
    raise ValueError(f"stats.compare: a and b are the same run {a}")

COLUMNS = ["a_model", "a_modality", "b_model", "b_modality", "kind", "category", "layer", "n", "mean_a", "mean_b",
           "diff", "p", "q", "significant"]
try:
    comp = paired_comparison(cat, a, b, n_perm=st["n_perm"], seed=st["seed"], alpha=st["alpha"])
except ValueError as e:  # no prompt traced in both runs: empty outputs with the reason in the log
    log.warning("no comparison: %s", e)
    comp = pd.DataFrame(columns=COLUMNS)
write_parquet(comp, out.table)
peaks = peak_summary(aie)
shared = sorted(set(cat.loc[(cat["model"] == a[0]) & (cat["modality"] == a[1]), "known_id"])
                & set(cat.loc[(cat["model"] == b[0]) & (cat["modality"] == b[1]), "known_id"]))

quotes = {}
for kind in p.kinds:
    try:
        q = quote_peak_ratio(peaks, a, b, kind).replace(" ATTN AIE ", " attention AIE ")
        r, lo, hi = peak_ratio_ci(cat, a, b, kind, n_boot=st["n_boot"], seed=st["seed"], level=st["level"])
        quotes[kind] = {"sentence": f"{q} ({st['level']:.0%} CI {lo:.1f}–{hi:.1f})", "ratio": r,
                        "ci_low": lo, "ci_high": hi}
    except (ValueError, KeyError) as e:  # a non-positive peak makes a ratio meaningless
        quotes[kind] = {"sentence": None, "ratio": None, "ci_low": None, "ci_high": None, "why_not": str(e)}
    log.info("%s: %s", kind, quotes[kind])

by_kind = {
    kind: {"cells": int((comp["kind"] == kind).sum()),
           "significant": int(comp.loc[comp["kind"] == kind, "significant"].sum()),
           "n_pairs_max": int(comp.loc[comp["kind"] == kind, "n"].max()) if (comp["kind"] == kind).any() else 0}
    for kind in p.kinds
}
summary = {
    "a": {"model": a[0], "modality": a[1]},
    "b": {"model": b[0], "modality": b[1]},
    "n_pairs": len(shared),
    "test": "two-sided sign-flip permutation test of the mean paired IE difference (a − b) per "
            "(kind, category, layer); Benjamini–Hochberg across all cells",
    **{k: st[k] for k in ("n_perm", "alpha", "seed")},
    "by_kind": by_kind,
    "peaks": peaks.replace({np.nan: None}).to_dict("records"),
    "peak_ratios": quotes,
}
write_json(summary, out.summary)

title = (f"{run_label(*a)} − {run_label(*b)}: mean paired IE difference\n"
         f"red: {run_label(*a)} larger, blue: {run_label(*b)} larger; {len(shared)} prompts in both"
         + "".join(f"; {answer_label(m)}" for m in sorted(set(cat.get("answer_mode", pd.Series(["top1"])).dropna()))))
save(difference_figure(comp, p.kinds, st["alpha"], title), list(out.figures))

sentences = [v["sentence"] or f"{k}: no ratio ({v['why_not']})" for k, v in quotes.items()]
sig = pd.DataFrame([{"kind": k, **v} for k, v in by_kind.items()])
top = comp.sort_values("q").head(15)[["kind", "category", "layer", "n", "mean_a", "mean_b", "diff", "p", "q"]]
sections = [
    ("", html.note(f"a = {run_label(*a)}, b = {run_label(*b)}; {len(shared)} prompts traced in both. "
                   f"{summary['test']}; {st['n_perm']} permutations, significant: q < {st['alpha']:g}.")),
    ("Peak ratios (quotable)", html.bullets(sentences)),
    ("Significant cells per kind", html.table(sig)),
    ("Peaks", html.table(peaks)),
    ("Smallest q-values", html.table(top)),
]
Path(out.html).write_text(html.page(f"{run_label(*a)} vs {run_label(*b)}", sections), encoding="utf-8")
log.info("wrote %s", list(out))
