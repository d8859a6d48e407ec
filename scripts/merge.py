"""All shards → token rows per prompt, per-category IE, AIE with bootstrap CIs, quarantine and a summary.

S→T: the shards hold IE per speech unit; each prompt's units are averaged per text token first (paper §2.4,
the text-token map in known.parquet), so ie_per_prompt.parquet has one row per text token and [Text]."""

from crosstrace.io import setup_logging
from crosstrace.steps import merge_run

log = setup_logging(snakemake.log[0])
i, out, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
merge_run(i.shards, i.known, i.noise, w.model, w.modality, p.trace, p.stats, p.select, p.on_empty,
          out.ie, out.categories, out.aie, out.quarantine, out.summary, log)
