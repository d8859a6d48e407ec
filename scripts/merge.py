"""All shards → raw IE per prompt, per-category IE, AIE with bootstrap CIs, quarantine and a summary.

S→T: the shards hold IE per speech unit; each prompt's units are averaged per text token first (paper §2.4,
the text-token map in known.parquet), so ie_per_prompt.parquet has one row per text token and [Text]."""

import pandas as pd

from crosstrace.filtering import greedy_answer_matches, select_for_trace, unexpected_answers
from crosstrace.io import console, read_json, setup_logging, write_json, write_parquet
from crosstrace.report.stats import aie_table
from crosstrace.speech.prompts import token_maps
from crosstrace.trace.tables import aggregate_by_text_tokens, category_table, merge_shards

log = setup_logging(snakemake.log[0])
w = snakemake.wildcards
ie, quarantined = merge_shards(snakemake.input.shards)
silence = {}
if w.modality == "s2t":
    known_s2t = pd.read_parquet(snakemake.input.known)
    ie, q_agg = aggregate_by_text_tokens(ie, token_maps(known_s2t))
    quarantined = pd.concat([quarantined, q_agg], ignore_index=True) if len(q_agg) else quarantined
    ok = known_s2t[known_s2t["known_id"].isin(ie["known_id"].unique())]  # the traced prompts
    silence = {
        "aggregation": "IE per text token = mean IE of its speech units; last token = [Text]",
        **{k: str(known_s2t[k].dropna().iloc[0]) if known_s2t[k].notna().any() else None
           for k in ("token_rows", "pause_owner")},  # speech.token_rows / pause_owner the table was built with
        "lead_silence_units": int(ok["lead_silence_units"].sum()),
        "trail_silence_units": int(ok["trail_silence_units"].sum()),
        "pause_units": int(ok["pause_units"].sum()),
        "units_in_prompts": int(ok["n_units"].sum()) if len(ok) else 0,
    }
    log.info("S→T aggregated by text tokens: %d prompts; %s", ie["known_id"].nunique() if len(ie) else 0, silence)
cats = category_table(ie)
st, t = snakemake.params.stats, snakemake.params.trace
aie = aie_table(cats, n_boot=st["n_boot"], seed=st["seed"], level=st["level"])
known = pd.read_parquet(snakemake.input.known)
noise = read_json(snakemake.input.noise)
sel = snakemake.params.select
per_prompt = ie.drop_duplicates("known_id")
attribute = known.set_index("known_id")["attribute"]
first_token = known.set_index("known_id")["first_token"]
unexpected = [int(k) for k, a in zip(per_prompt["known_id"], per_prompt["answer"], strict=True)
              if not greedy_answer_matches(str(a), t["answer"], first_token.get(k), str(attribute.get(k, "")))]
candidates = select_for_trace(known, None, require_known=sel["require_known"], expect_answer="trace")
skipped = unexpected_answers(candidates) if sel["expect_answer"] == "skip" else candidates.iloc[:0]
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
    # ROME's expect check (filter.expect_answer): traced prompts whose answer token does not start the
    # attribute, and known prompts left out for that reason (skip mode only)
    "expect_answer": sel["expect_answer"],
    "unexpected_answer": len(unexpected),
    "unexpected_answer_ids": unexpected,
    "skipped_unexpected": len(skipped),
    "corruption_not_lowering": int((per_prompt["p_corrupted"].astype(float) >= per_prompt["p_clean"].astype(float)).sum()),
    "noise_std": noise["std"],
    "noise_scale": float(ie["noise_scale"].iloc[0]) if len(ie) else None,
    "samples": t["noise"]["samples"],
    "seed": t["noise"]["seed"],
    "window": t["window"],
    "kinds": t["kinds"],
    "answer": t["answer"],
    "engine": str(ie["engine"].iloc[0]) if len(ie) else None,
    "ci": {"method": "percentile bootstrap over prompts", **st},
    **silence,
}
if summary["traced"] == 0:
    why = (f"{summary['known']} of {summary['records']} records are known to the model"
           if sel["require_known"] else f"{summary['records']} records (filter.require_known: false)")
    msg = (f"no prompt was traced for {w.model} {w.modality}: {why}, {len(skipped)} skipped by filter.expect_answer, "
           f"{len(quarantined)} quarantined in tracing. Trace a model that knows some of the facts, set "
           "filter.require_known: false to trace every record, or trace.on_empty: warn to finish the run anyway.")
    if snakemake.params.on_empty == "fail":
        console(f"ERROR: {msg}")
        raise SystemExit(1)
    summary["warning"] = msg
    console(f"WARNING: {msg}")
if summary["unexpected_answer"] and sel["expect_answer"] == "flag":
    ids = summary["unexpected_answer_ids"]
    console(f"{w.model} {w.modality}: {len(ids)} traced prompt(s) answer with a token that does not start the attribute "
            f"(known_id {ids[:10]}{' …' if len(ids) > 10 else ''}); flagged in the traced-prompts table "
            "(filter.expect_answer: flag)")
log.info("summary: %s", summary)
write_parquet(ie, snakemake.output.ie)
write_parquet(cats, snakemake.output.categories)
write_parquet(quarantined, snakemake.output.quarantine)
write_parquet(aie, snakemake.output.aie)
write_json(summary, snakemake.output.summary)
