"""Read the user's own facts file (data.source), map its columns and validate every record; bad ones go
to the quarantine table with a reason."""

from dataclasses import fields

import pandas as pd

from crosstrace.data import KnownRecord, quarantine_rows, records_to_rows
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
record_columns = [f.name for f in fields(KnownRecord)]
table = pd.DataFrame(records_to_rows(records), columns=record_columns).astype({"known_id": "int64"})
write_parquet(table, snakemake.output.records)
quarantine = pd.DataFrame(quarantine_rows(quarantined), columns=["index", "known_id", "stage", "reason"])
write_parquet(quarantine.astype({"index": "int64"}), snakemake.output.quarantine)
log.info("%s (%s layout, limit %s): %d input records, %d kept, %d quarantined", path, layout, p.limit,
         len(records) + len(quarantined), len(records), len(quarantined))
