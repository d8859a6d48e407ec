"""Trace one shard of known prompts; raw IE rows and quarantined prompts go to two parquet files.

The shard's known_ids come as a param (common.smk: trace_shards); with trace.screen, the exact trace's
shards hold only the prompts the screen selected."""

import pandas as pd
import torch

from crosstrace.io import read_json, setup_logging, write_parquet
from crosstrace.modality import load_any, trace_one_fn
from crosstrace.shards import select_known_ids
from crosstrace.trace import NoiseConfig, Tracer, TraceSettings
from crosstrace.trace.atp import AtpConfig
from crosstrace.trace.tables import trace_records

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p, w = snakemake.params, snakemake.wildcards
m = read_json(snakemake.input.model)
lm = load_any(m)
t = p.trace
# trace.max_rows changes speed only, so it is read from the config, not a rule param (a param change reruns).
settings = TraceSettings(kinds=tuple(t["kinds"]), window=t["window"], noise=NoiseConfig(**t["noise"]),
                         engine=t["engine"], max_rows=snakemake.config["trace"]["max_rows"], answer=t["answer"],
                         max_tokens=t["max_prompt_tokens"], atp=AtpConfig(**t.get("atp", {})))
std = read_json(snakemake.input.noise)["std"]
tracer = Tracer(lm.model, lm.tokenizer, settings, std)
shard = select_known_ids(pd.read_parquet(snakemake.input.known), p.known_ids)
log.info("shard %s: %d prompts (known_id %s), engine %s (max_rows %s), noise scale %.4f", w.shard, len(shard),
         list(p.known_ids), tracer.engine, settings.max_rows, tracer.noise_scale)
ie, quarantined = trace_records(tracer, shard.to_dict("records"), m["name"], w.modality, trace_one=trace_one_fn(m, tracer, w.modality))
log.info("shard %s: %d prompts in = %d traced + %d quarantined", w.shard, len(shard), ie["known_id"].nunique(), len(quarantined))
write_parquet(quarantined, snakemake.output.quarantine)
write_parquet(ie, snakemake.output.ie)
