"""Whisper QC of one shard: transcript (with word timestamps, reused by the whisper aligner), WER, pass/fail."""

import pandas as pd
import torch

from crosstrace.io import run_shard, setup_logging, write_parquet
from crosstrace.shards import select_known_ids
from crosstrace.speech.asr import WhisperASR
from crosstrace.speech.pipeline import QCResult, qc_clip

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
records = select_known_ids(pd.read_parquet(snakemake.input.records), p.known_ids)
manifest = pd.read_parquet(snakemake.input.manifest).set_index("known_id")
asr = WhisperASR(p.model, cache_dir=p.cache_dir, device=p.device, compute_type=p.compute_type,
                 beam_size=p.beam_size, cpu_threads=snakemake.threads, engine=p.engine)
qc, dt = run_shard(records, lambda r: qc_clip(asr, r, manifest.loc[r.known_id], p.max_wer), QCResult, "whisper QC")
write_parquet(qc, snakemake.output.qc)
log.info("shard %s: %d prompts, %d pass (WER <= %s), mean WER %.3f, %.2f s per prompt", snakemake.wildcards.shard, len(qc),
         int(qc["passes_qc"].sum()), p.max_wer, qc["wer"].mean(), dt / max(1, len(qc)))
