"""Synthesise one shard of prompts to 16 kHz 16-bit WAVs; write the shard's manifest (bad prompts are
quarantined rows, never a failed job)."""

from pathlib import Path

import pandas as pd

from crosstrace.io import run_shard, setup_logging, write_parquet
from crosstrace.shards import select_known_ids
from crosstrace.speech.pipeline import SynthResult, synthesize_record
from crosstrace.speech.tts import get_backend

log = setup_logging(snakemake.log[0])
p = snakemake.params
records = select_known_ids(pd.read_parquet(snakemake.input.records), p.known_ids)
backend = get_backend(p.backend, **(p.backend_options or {}))
wav_dir = Path(snakemake.output.wavs)
wav_dir.mkdir(parents=True, exist_ok=True)
manifest, dt = run_shard(records, lambda r: synthesize_record(backend, r.known_id, r.prompt, wav_dir / f"{r.known_id}.wav",
                                                               p.min_duration_s, p.min_rms), SynthResult, "synthesize")
write_parquet(manifest, snakemake.output.manifest)
ok = int((manifest["status"] == "ok").sum())
log.info("shard %s: %d prompts, %d synthesised, %d quarantined, %.2f s per prompt (%s, %s)", snakemake.wildcards.shard, len(manifest),
         ok, len(manifest) - ok, dt / max(1, len(manifest)), backend.name, backend.voice)
