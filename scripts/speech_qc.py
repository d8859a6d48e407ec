"""Whisper QC of one shard: transcript (with word timestamps, reused by the whisper aligner), WER, pass/fail."""

import time
from dataclasses import asdict

import pandas as pd
import torch

from crosstrace.io import setup_logging, write_parquet
from crosstrace.shards import select_known_ids
from crosstrace.speech.asr import WhisperASR
from crosstrace.speech.pipeline import qc_record, try_load_audio16k

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
records = select_known_ids(pd.read_parquet(snakemake.input.records), p.known_ids)
manifest = pd.read_parquet(snakemake.input.manifest).set_index("known_id")
asr = WhisperASR(p.model, cache_dir=p.cache_dir, device=p.device, compute_type=p.compute_type,
                 beam_size=p.beam_size, cpu_threads=snakemake.threads, engine=p.engine)
rows, t0 = [], time.perf_counter()
for r in records.itertuples(index=False):
    m = manifest.loc[r.known_id]
    audio, err = try_load_audio16k(m["path"]) if m["status"] == "ok" else (None, None)
    rows.append(asdict(qc_record(asr, r.known_id, r.prompt, audio, p.max_wer, audio_error=err)))
dt = time.perf_counter() - t0
qc = pd.DataFrame(rows, columns=["known_id", "transcript", "wer", "passes_qc", "reason", "words"])
write_parquet(qc, snakemake.output.qc)
log.info("shard %s: %d prompts, %d pass (WER <= %s), mean WER %.3f, %.2f s per prompt", snakemake.wildcards.shard, len(qc),
         int(qc["passes_qc"].sum()), p.max_wer, qc["wer"].mean(), dt / max(1, len(qc)))
