"""Subject time spans of one shard with every configured aligner (ctc, tts, whisper)."""

import time

import pandas as pd
import torch

from crosstrace.io import setup_logging, write_parquet
from crosstrace.shards import select_known_ids
from crosstrace.speech.align import CTCAligner
from crosstrace.speech.pipeline import (
    ALIGNMENT_COLUMNS,
    align_record,
    alignment_row,
    timings_from_json,
    transcript_from_qc,
    try_load_audio16k,
)

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
rows, spent = [], {a: 0.0 for a in aligners}
for r in records.itertuples(index=False):
    m = manifest.loc[r.known_id]
    audio, err = try_load_audio16k(m["path"]) if m["status"] == "ok" else (None, None)
    q = qc.loc[r.known_id]
    # words is missing (None, or NaN in pandas' str columns) where QC had no audio to transcribe
    transcript = transcript_from_qc(q["transcript"], q["words"]) if isinstance(q["words"], str) and q["words"] else None
    for name in aligners:
        t0 = time.perf_counter()
        a = align_record(name, r.known_id, r.prompt, r.subject, audio, ctc=ctc,
                         word_timings=timings_from_json(m["word_timings"]), transcript=transcript,
                         audio_error=err)
        spent[name] += time.perf_counter() - t0
        if a.status != "ok":
            log.warning("%s", a.reason)
        rows.append(alignment_row(a))
table = pd.DataFrame(rows, columns=ALIGNMENT_COLUMNS)
write_parquet(table, snakemake.output.alignment)
for name in aligners:
    sub = table[table["aligner"] == name]
    log.info("shard %s, %s: %d ok of %d, %.3f s per prompt", snakemake.wildcards.shard, name, int((sub["status"] == "ok").sum()),
             len(sub), spent[name] / max(1, len(records)))
