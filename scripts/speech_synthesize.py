"""Synthesise one shard of prompts to 16 kHz 16-bit WAVs; write the shard's manifest (bad prompts are
quarantined rows, never a failed job)."""

import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from crosstrace.io import setup_logging, write_parquet
from crosstrace.shards import select_known_ids
from crosstrace.speech.pipeline import synthesize_record
from crosstrace.speech.tts import get_backend

log = setup_logging(snakemake.log[0])
p = snakemake.params
records = select_known_ids(pd.read_parquet(snakemake.input.records), p.known_ids)
backend = get_backend(p.backend, **(p.backend_options or {}))
wav_dir = Path(snakemake.output.wavs)
wav_dir.mkdir(parents=True, exist_ok=True)
rows, t0 = [], time.perf_counter()
for r in records.itertuples(index=False):
    res = synthesize_record(backend, r.known_id, r.prompt, wav_dir / f"{r.known_id}.wav", p.min_duration_s, p.min_rms)
    rows.append(asdict(res))
dt = time.perf_counter() - t0
manifest = pd.DataFrame(rows, columns=["known_id", "path", "duration_s", "sample_rate", "backend", "voice",
                                       "status", "reason", "word_timings"])
write_parquet(manifest, snakemake.output.manifest)
ok = int((manifest["status"] == "ok").sum())
log.info("shard %s: %d prompts, %d synthesised, %d quarantined, %.2f s per prompt (%s, %s)", snakemake.wildcards.shard, len(manifest),
         ok, len(manifest) - ok, dt / max(1, len(manifest)), backend.name, backend.voice)
