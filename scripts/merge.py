"""All shards → raw IE per prompt, per-category IE, AIE with bootstrap CIs, quarantine and a summary.

S→T: the shards hold IE per speech unit; each prompt's units are averaged per text token first (paper §2.4,
the text-token map in known.parquet), so ie_per_prompt.parquet has one row per text token and [Text]."""

import pandas as pd

from crosstrace.io import read_json, setup_logging, write_json, write_parquet
from crosstrace.modality import s2t_token_maps
from crosstrace.report.stats import aie_table
from crosstrace.trace.tables import aggregate_by_text_tokens, category_table, merge_shards

log = setup_logging(snakemake.log[0])
w = snakemake.wildcards
ie, quarantined = merge_shards(snakemake.input.shards)
silence = {}
if w.modality == "s2t":
    known_s2t = pd.read_parquet(snakemake.input.known)
    ie, q_agg = aggregate_by_text_tokens(ie, s2t_token_maps(known_s2t))
    quarantined = pd.concat([quarantined, q_agg], ignore_index=True) if len(q_agg) else quarantined
    ok = known_s2t[known_s2t["known_id"].isin(ie["known_id"].unique())]  # the traced prompts
    silence = {
        "aggregation": "IE per text token = mean IE of its speech units; last token = [Text]",
        "lead_silence_units": int(ok["lead_silence_units"].sum()),
        "trail_silence_units": int(ok["trail_silence_units"].sum()),
        "units_in_prompts": int(ok["n_units"].sum()) if len(ok) else 0,
    }
    log.info("S→T aggregated by text tokens: %d prompts; %s", ie["known_id"].nunique() if len(ie) else 0, silence)
cats = category_table(ie)
st = snakemake.params.stats
aie = aie_table(cats, n_boot=st["n_boot"], seed=st["seed"], level=st["level"])
known = pd.read_parquet(snakemake.input.known, columns=["known", "label"])
noise = read_json(snakemake.input.noise)
t = snakemake.params.trace
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
    "engine": str(ie["engine"].iloc[0]) if len(ie) else None,
    "ci": {"method": "percentile bootstrap over prompts", **st},
    **silence,
}
log.info("summary: %s", summary)
write_parquet(ie, snakemake.output.ie)
write_parquet(cats, snakemake.output.categories)
write_parquet(quarantined, snakemake.output.quarantine)
write_parquet(aie, snakemake.output.aie)
write_json(summary, snakemake.output.summary)
