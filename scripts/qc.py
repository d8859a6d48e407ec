"""Counts per filtering stage for one run (table page + bar figure) and the prompts quarantined."""

from pathlib import Path

import pandas as pd

from crosstrace.io import read_json, setup_logging
from crosstrace.report import html
from crosstrace.report.figures import counts_figure, noise_text, run_label, save

log = setup_logging(snakemake.log[0])
p, out = snakemake.params, snakemake.output
summary = read_json(snakemake.input.summary)
validation = pd.read_parquet(snakemake.input.validation)
trace_q = pd.read_parquet(snakemake.input.quarantine)
counts = html.stage_counts(summary, len(validation), trace_q, p.require_known)
log.info("counts:\n%s", counts.to_string())

label = run_label(summary["model"], summary["modality"])
settings = {k: summary.get(k) for k in ("noise_std", "noise_scale", "samples", "seed", "window", "engine", "answer")}
sections = [
    *([("", html.warning(summary["warning"]))] if summary.get("warning") else []),
    ("Prompts per stage", html.table(counts)),
    ("", html.note(f"trace.max_prompts = {p.max_prompts}; filter.require_known = {p.require_known}.")),
    ("Tracing settings", html.table(pd.DataFrame([settings]))),
    ("Quarantined in tracing", html.table(trace_q) if len(trace_q) else html.note("none")),
    ("Quarantined at validation", html.table(validation) if len(validation) else html.note("none")),
]
Path(out.html).write_text(html.page(f"QC: {label}", sections), encoding="utf-8")

bars = counts[~counts["stage"].str.startswith("known:")].reset_index(drop=True)  # the split is in the table
save(counts_figure(bars, f"{label}: prompts per stage ({noise_text(summary)})"), list(out.figures))
log.info("wrote %s, %s", out.html, list(out.figures))
