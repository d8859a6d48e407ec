"""The speech family's input step on one shard of WAVs: SpiritLM base units (HuBERT 25 Hz + quantizer,
deduplicated), or Qwen2-Audio's audio positions (counted from the processor, no model run).

Bad audio (missing, zero units, unreadable, over an encoder's window) becomes a quarantined row with its
reason, never a failed job."""

import pandas as pd
import torch

from crosstrace.config import ModelSpec
from crosstrace.io import read_json, run_shard, setup_logging, write_parquet
from crosstrace.models.speech_family import speech_family
from crosstrace.speech.units import UNITS_COLUMNS, encode_clip

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
spec = ModelSpec.from_dict(read_json(snakemake.input.model))
tok = speech_family(spec.family).speech_encoder(spec)
table, _ = run_shard(pd.read_parquet(snakemake.input.manifest), lambda r: encode_clip(tok, r), UNITS_COLUMNS, "units")
write_parquet(table, snakemake.output.units)
ok = table["status"] == "ok"
log.info("%s shard %s: %d clips, %d encoded (mean %.1f positions, %.1f frames), %d quarantined", spec.name,
         snakemake.wildcards.shard, len(table), int(ok.sum()),
         table.loc[ok, "run_lengths"].map(len).mean() if ok.any() else 0,
         table.loc[ok, "n_frames"].mean() if ok.any() else 0, int((~ok).sum()))
