"""Prompts that get a speech version: the validated records, capped by speech.max_prompts, in order."""

import pandas as pd

from crosstrace.io import setup_logging, write_parquet

log = setup_logging(snakemake.log[0])
records = pd.read_parquet(snakemake.input.records)
cap = snakemake.params.max_prompts
selected = records if cap is None else records.head(int(cap))
write_parquet(selected[["known_id", "subject", "attribute", "prompt"]].reset_index(drop=True), snakemake.output.records)
log.info("%d of %d records selected for speech", len(selected), len(records))
