"""Merge QC shards; corpus WER summary and the per-prompt WER histogram."""

import pandas as pd

from crosstrace.speech._io import setup_logging, write_json_atomic, write_parquet
from crosstrace.speech.report import plot_wer_histogram, wer_summary

log = setup_logging(snakemake.log[0])
qc = pd.concat([pd.read_parquet(f) for f in snakemake.input.shards], ignore_index=True)
records = pd.read_parquet(snakemake.input.records)
write_parquet(qc, snakemake.output.qc)
summary = wer_summary(qc, records, snakemake.params.max_wer)
write_json_atomic(summary, snakemake.output.summary)
plot_wer_histogram(qc["wer"], snakemake.output.figure, snakemake.params.max_wer)
log.info("WER: corpus %.3f, mean %.3f over %d transcribed; %d of %d pass QC", summary["corpus_wer"],
         summary["mean_wer"], summary["n_transcribed"], summary["n_pass"], summary["n_prompts"])
