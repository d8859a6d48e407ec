"""Read the user's own facts file (data.source), map its columns and validate the first data.limit records
(all without a limit): each is kept or quarantined with a reason."""

import pandas as pd

from crosstrace.data import QUARANTINE_TYPES, RECORD_TYPES, quarantine_rows, records_to_rows
from crosstrace.io import setup_logging, write_parquet
from crosstrace.sources import check_sha256, read_facts

log = setup_logging(snakemake.log[0])
p = snakemake.params
path = snakemake.input.facts
digest = check_sha256(path, p.sha256)
if p.sha256 is None:
    log.warning("%s: no data.file_sha256 given, so the file is not checked against a hash (its sha256 is %s)", path, digest)
else:
    log.info("%s: sha256 %s verified", path, digest)
records, quarantined, layout = read_facts(path, p.format, p.columns, p.templates, p.limit)
for q in quarantined:
    log.warning("record #%d (id %s) quarantined: %s", q.index, q.known_id, q.reason)
# Typed even when empty: a later stage still reads the columns and ends the run with one clear line.
write_parquet(pd.DataFrame(records_to_rows(records)), snakemake.output.records, types=RECORD_TYPES)
write_parquet(pd.DataFrame(quarantine_rows(quarantined)), snakemake.output.quarantine, types=QUARANTINE_TYPES)
log.info("%s (%s layout, limit %s): %d input records, %d kept, %d quarantined", path, layout, p.limit,
         len(records) + len(quarantined), len(records), len(quarantined))
if not records:
    log.warning("0 records left after validation: see %s", snakemake.output.quarantine)
