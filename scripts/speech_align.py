"""Subject time spans of one shard with every configured aligner (ctc, tts, whisper)."""

import pandas as pd
import torch

from crosstrace.io import run_shard, setup_logging, write_parquet
from crosstrace.shards import select_known_ids
from crosstrace.speech.align import CTCAligner
from crosstrace.speech.pipeline import ALIGNMENT_COLUMNS, align_clip

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
records = select_known_ids(pd.read_parquet(snakemake.input.records), p.known_ids)
manifest = pd.read_parquet(snakemake.input.manifest).set_index("known_id")
qc = pd.read_parquet(snakemake.input.qc).set_index("known_id")
aligners = list(p.aligners)
ctc = None
if "ctc" in aligners:
    if not p.ctc_model:
        raise ValueError("speech.align.aligners has 'ctc' but speech.align.ctc_model is null")
    ctc = CTCAligner.from_pretrained(p.ctc_model, device=p.device, subject_chars=p.ctc_subject_chars)
spent = {a: 0.0 for a in aligners}
table, _ = run_shard(records, lambda r: align_clip(aligners, r, manifest.loc[r.known_id], qc.loc[r.known_id], ctc, spent),
                     ALIGNMENT_COLUMNS, "align")
write_parquet(table, snakemake.output.alignment)
for name in aligners:
    sub = table[table["aligner"] == name]
    log.info("shard %s, %s: %d ok of %d, %.3f s per prompt", snakemake.wildcards.shard, name, int((sub["status"] == "ok").sum()),
             len(sub), spent[name] / max(1, len(records)))
