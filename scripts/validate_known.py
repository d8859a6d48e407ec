"""Validate every record; bad ones go to the quarantine table with a reason."""

import pandas as pd

from crosstrace.data import load_known, quarantine_rows, records_to_rows
from crosstrace.io import setup_logging, write_parquet

log = setup_logging(snakemake.log[0])
records, quarantined = load_known(snakemake.input[0])
limit = snakemake.params.limit
if limit is not None:
    records = records[:limit]
    quarantined = [q for q in quarantined if q.index < limit] if records else quarantined
for q in quarantined:
    log.warning("record #%d (known_id %s) quarantined: %s", q.index, q.known_id, q.reason)
write_parquet(pd.DataFrame(records_to_rows(records)), snakemake.output.records)
write_parquet(pd.DataFrame(quarantine_rows(quarantined), columns=["index", "known_id", "stage", "reason"]), snakemake.output.quarantine)
log.info("%d records kept, %d quarantined", len(records), len(quarantined))
