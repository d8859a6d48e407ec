"""Bring one shard of the user's recordings (speech.source: recordings) into the run as 16 kHz mono 16-bit
WAVs; write the shard's manifest, same table as synthesize (bad audio is a quarantined row, never a failed job)."""

import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from crosstrace.io import setup_logging, write_parquet
from crosstrace.shards import select_known_ids
from crosstrace.speech.pipeline import SynthResult
from crosstrace.speech.recordings import load_recording, read_manifest

log = setup_logging(snakemake.log[0])
p = snakemake.params
shard = snakemake.wildcards.shard
valid = pd.read_parquet(snakemake.input.records)
records = select_known_ids(valid, p.known_ids)
recordings = read_manifest(snakemake.input.manifest)
if int(shard) == 0:
    unused = sorted(set(recordings) - set(valid["known_id"]))
    if unused:
        log.info("%d manifest rows name ids that are not among the %d validated records: %s", len(unused),
                 len(valid), unused[:20])
wav_dir = Path(snakemake.output.wavs)
wav_dir.mkdir(parents=True, exist_ok=True)
rows, t0 = [], time.perf_counter()
for r in records.itertuples(index=False):
    res = load_recording(r.known_id, r.prompt, r.subject, recordings.get(r.known_id), wav_dir / f"{r.known_id}.wav",
                         max_wer=p.max_wer, min_rms=p.min_rms, max_chars_per_s=p.max_chars_per_s)
    rows.append(asdict(res))
manifest = pd.DataFrame(rows, columns=list(SynthResult.__dataclass_fields__))
write_parquet(manifest, snakemake.output.manifest)
ok = int((manifest["status"] == "ok").sum())
log.info("shard %s: %d records, %d recordings converted, %d quarantined, %.2f s per recording", shard, len(manifest),
         ok, len(manifest) - ok, (time.perf_counter() - t0) / max(1, len(manifest)))
