"""Trace one shard of known prompts; raw IE rows and quarantined prompts go to two parquet files.

With a screen table among the inputs (trace.screen), only the prompts it selected are traced."""

from crosstrace.io import setup_logging
from crosstrace.steps import trace_shard

log = setup_logging(snakemake.log[0])
p, w, inp, out = snakemake.params, snakemake.wildcards, snakemake.input, snakemake.output
trace_shard(inp.model, w.modality, p.trace, inp.noise, inp.known, int(w.shard), p.shard_size, p.max_prompts,
            p.require_known, p.expect_answer, out.ie, out.quarantine,
            screen=inp.screen if "screen" in inp.keys() else None, threads=snakemake.threads, log=log)
