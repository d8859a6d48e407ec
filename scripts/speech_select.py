"""Prompts that get a speech version: the validated records, capped by speech.max_prompts, in order."""

import pandas as pd

from crosstrace.data import no_records_left
from crosstrace.io import setup_logging, write_parquet
from crosstrace.shards import select_for_speech

log = setup_logging(snakemake.log[0])
records = pd.read_parquet(snakemake.input.records)
if records.empty:
    raise no_records_left(snakemake.input.validation)
selected = select_for_speech(records, snakemake.params.max_prompts)
write_parquet(selected[["known_id", "subject", "attribute", "prompt"]].reset_index(drop=True), snakemake.output.records)
log.info("%d of %d records selected for speech", len(selected), len(records))
