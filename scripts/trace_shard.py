"""Trace one shard of known prompts; raw IE rows and quarantined prompts go to two parquet files.

The shard's known_ids come as a param (common.smk: trace_shards); with trace.screen, the exact trace's
shards hold only the prompts the screen selected."""

from crosstrace.io import setup_logging
from crosstrace.steps import trace_shard

log = setup_logging(snakemake.log[0])
p, w, inp, out = snakemake.params, snakemake.wildcards, snakemake.input, snakemake.output
# trace.max_rows changes speed only, so it is read from the config, not a rule param (a param change reruns).
trace_shard(inp.model, w.modality, p.trace, inp.noise, inp.known, p.known_ids, out.ie, out.quarantine, shard=w.shard,
            max_rows=snakemake.config["trace"]["max_rows"], threads=snakemake.threads, log=log)
