"""All shards → raw IE per prompt, per-category IE, AIE with bootstrap CIs, quarantine and a summary."""

import pandas as pd

from crosstrace.io import read_json, setup_logging, write_json, write_parquet
from crosstrace.report.stats import aie_table
from crosstrace.trace.tables import category_table, merge_shards

log = setup_logging(snakemake.log[0])
w = snakemake.wildcards
ie, quarantined = merge_shards(snakemake.input.shards)
cats = category_table(ie)
st, t = snakemake.params.stats, snakemake.params.trace
aie = aie_table(cats, n_boot=st["n_boot"], seed=st["seed"], level=st["level"])
aie["answer_mode"] = t["answer"]  # one setting per run, as in every shard (merge_shards refuses a mix)
known = pd.read_parquet(snakemake.input.known, columns=["known", "label"])
noise = read_json(snakemake.input.noise)
summary = {
    "model": w.model,
    "modality": w.modality,
    "records": len(known),
    "known": int(known["known"].sum()),
    "known_exact": int((known["label"] == "exact").sum()),
    "known_partial": int((known["label"] == "partial").sum()),
    # S→T: records without a traceable spoken prompt (no speech, alignment or units; see known.parquet)
    "no_prompt": int((known["label"] == "quarantined").sum()),
    "traced": int(ie["known_id"].nunique()) if len(ie) else 0,
    "quarantined": len(quarantined),
    "noise_std": noise["std"],
    "noise_scale": float(ie["noise_scale"].iloc[0]) if len(ie) else None,
    "samples": t["noise"]["samples"],
    "seed": t["noise"]["seed"],
    "window": t["window"],
    "kinds": t["kinds"],
    "answer": t["answer"],
    "engine": str(ie["engine"].iloc[0]) if len(ie) else None,
    "ci": {"method": "percentile bootstrap over prompts", **st},
}
log.info("summary: %s", summary)
write_parquet(ie, snakemake.output.ie)
write_parquet(cats, snakemake.output.categories)
write_parquet(quarantined, snakemake.output.quarantine)
write_parquet(aie, snakemake.output.aie)
write_json(summary, snakemake.output.summary)
