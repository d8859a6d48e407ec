"""Merge QC shards; corpus WER summary and the per-prompt WER histogram."""

import pandas as pd

from crosstrace.io import read_parquets, setup_logging, write_json, write_parquet
from crosstrace.speech.report import plot_wer_histogram, wer_summary

log = setup_logging(snakemake.log[0])
qc = read_parquets(snakemake.input.shards)
records = pd.read_parquet(snakemake.input.records)
write_parquet(qc, snakemake.output.qc)
summary = wer_summary(qc, records, snakemake.params.max_wer)
write_json(summary, snakemake.output.summary)
plot_wer_histogram(qc["wer"], snakemake.output.figure, snakemake.params.max_wer,
                   audio="recorded" if snakemake.params.source == "recordings" else "synthetic")
log.info("WER: corpus %.3f, mean %.3f over %d transcribed; %d of %d pass QC", summary["corpus_wer"],
         summary["mean_wer"], summary["n_transcribed"], summary["n_pass"], summary["n_prompts"])
