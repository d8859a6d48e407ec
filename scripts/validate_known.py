"""Validate the first data.limit records (all without a limit): each is kept or quarantined with a reason."""

import pandas as pd

from crosstrace.data import QUARANTINE_TYPES, RECORD_TYPES, load_known, quarantine_rows, records_to_rows
from crosstrace.io import setup_logging, write_parquet

log = setup_logging(snakemake.log[0])
records, quarantined = load_known(snakemake.input[0], limit=snakemake.params.limit)
for q in quarantined:
    log.warning("record #%d (known_id %s) quarantined: %s", q.index, q.known_id, q.reason)
write_parquet(pd.DataFrame(records_to_rows(records)), snakemake.output.records, types=RECORD_TYPES)
write_parquet(pd.DataFrame(quarantine_rows(quarantined)), snakemake.output.quarantine, types=QUARANTINE_TYPES)
log.info("%d records considered (data.limit = %s): %d kept, %d quarantined", len(records) + len(quarantined),
         snakemake.params.limit, len(records), len(quarantined))
if not records:
    log.warning("0 records left after validation: see %s", snakemake.output.quarantine)
