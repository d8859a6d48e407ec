"""Trace one shard of known prompts; raw IE rows and quarantined prompts go to two parquet files.

With a screen table among the inputs (trace.screen), only the prompts it selected are traced."""

import pandas as pd
import torch

from crosstrace.filtering import select_for_trace
from crosstrace.io import read_json, setup_logging, write_parquet
from crosstrace.modality import load_any, trace_one_fn
from crosstrace.trace import NoiseConfig, Tracer, TraceSettings
from crosstrace.trace.atp import AtpConfig
from crosstrace.trace.tables import trace_records

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p, w = snakemake.params, snakemake.wildcards
m = read_json(snakemake.input.model)
lm = load_any(m)
t = p.trace
settings = TraceSettings(kinds=tuple(t["kinds"]), window=t["window"], noise=NoiseConfig(**t["noise"]),
                         engine=t["engine"], max_rows=t["max_rows"], answer=t["answer"],
                         atp=AtpConfig(**t.get("atp", {})))
std = read_json(snakemake.input.noise)["std"]
tracer = Tracer(lm.model, lm.tokenizer, settings, std)
known = pd.read_parquet(snakemake.input.known)
if "screen" in snakemake.input.keys():
    screened = pd.read_parquet(snakemake.input.screen)
    known = known[known["known_id"].isin(screened.loc[screened["selected"], "known_id"])]
shard = select_for_trace(known, p.max_prompts, int(w.shard), p.shard_size, p.require_known, p.expect_answer)
log.info("shard %s: %d prompts, engine %s, noise scale %.4f", w.shard, len(shard), tracer.engine, tracer.noise_scale)
ie, quarantined = trace_records(tracer, shard.to_dict("records"), m["name"], w.modality, trace_one=trace_one_fn(m, tracer, w.modality))
write_parquet(quarantined, snakemake.output.quarantine)
write_parquet(ie, snakemake.output.ie)
