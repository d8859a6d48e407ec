"""Cross-modal representation similarity of one SpiritLM model: T→T vs S→T block outputs per layer.

Prompts in both Known sets; cosine and L2 at matched positions (last subject token ↔ last subject unit,
last token ↔ [Text]) with a matched-random baseline and bootstrap CIs; table, HTML page and line plot."""

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from crosstrace.io import read_json, setup_logging, write_parquet
from crosstrace.modality import load_any
from crosstrace.report import html
from crosstrace.report.stats import SIMILARITY_COLUMNS, similarity_by_layer, similarity_long
from crosstrace.report.stats_figures import plot_similarity_by_layer
from crosstrace.representations import POSITIONS, matched_states, shared_prompts

LABELS = {"subject": "last subject token ↔ last subject unit", "last": "last token ↔ last token ([Text])"}

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
inp, out, p = snakemake.input, snakemake.output, snakemake.params
st = p.stats
m = read_json(inp.model)
lm = load_any(m)
t2t, s2t = pd.read_parquet(inp.t2t), pd.read_parquet(inp.s2t)
pairs = shared_prompts(t2t, s2t, p.require_known)
log.info("%s: %d prompts in both sets (require_known=%s)", m["name"], len(pairs), p.require_known)
states = matched_states(lm.model, lm.tokenizer, m, pairs)
for _kid, reason in states.skipped:
    log.warning("skipped %s", reason)
log.info("token positions used:\n%s", states.positions.to_string())

n = len(states.known_ids)
wides = {}
if n >= 2:
    for i, pos in enumerate(POSITIONS):
        wides[pos] = similarity_by_layer(
            states.text[pos],
            states.speech[pos],
            np.random.default_rng([st["seed"], i]),
            n_random=st["n_random"],
            n_boot=st["n_boot"],
            level=st["level"],
        )
    table = similarity_long(wides)
    why_empty = ""
else:
    why_empty = f"{n} prompt(s) in both sets with a subject span; the random baseline needs at least 2"
    log.warning("no similarity table: %s", why_empty)
    table = pd.DataFrame(columns=SIMILARITY_COLUMNS)
table.insert(0, "model", m["name"])
write_parquet(table, out.table)

figures = [Path(f) for f in out.figures]
stem = figures[0].with_suffix("")
title = f"{m['name']}: T→T vs S→T block outputs, {n} prompts in both sets"
if wides:
    plot_similarity_by_layer(
        {LABELS[pos]: w for pos, w in wides.items()},
        stem,
        title=title,
        formats=[f.suffix[1:] for f in figures],
    )
else:
    fig = Figure(figsize=(7, 2))
    fig.text(0.5, 0.5, f"{title}\nno similarity: {why_empty}", ha="center", va="center")
    for f in figures:
        fig.savefig(f)

level = f"{st['level']:.0%}"
sections = [
    (
        "",
        html.note(
            f"Prompts in both Known sets: {len(pairs)}; used: {n} (a prompt known in one modality only is not "
            f"used). Layer l = output of block l. Positions: subject = {LABELS['subject']}; last = "
            f"{LABELS['last']}. mean: over prompts; CIs: {level} percentile bootstrap over "
            f"prompts ({st['n_boot']} resamples). baseline: each prompt's text state against the speech state of "
            f"another prompt drawn at random, same layer and position ({st['n_random']} draws averaged); "
            f"diff = matched − baseline."
        ),
    ),
    ("Skipped prompts", html.bullets(r for _, r in states.skipped) if states.skipped else html.note("none")),
    ("Per layer", html.table(table.drop(columns="model")) if len(table) else html.note(why_empty)),
    ("Token positions", html.table(states.positions)),
]
Path(out.html).write_text(
    html.page(f"{m['name']}: text vs speech representations", sections), encoding="utf-8"
)
log.info("wrote %s", list(out))
