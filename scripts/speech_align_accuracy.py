"""Merge alignment shards; subject-boundary error of each aligner against the reference (TTS timings)."""


from crosstrace.io import read_parquets, setup_logging, write_parquet
from crosstrace.speech.align import alignment_accuracy

log = setup_logging(snakemake.log[0])
table = read_parquets(snakemake.input.shards)
write_parquet(table, snakemake.output.alignment)
acc = alignment_accuracy(table, reference=snakemake.params.reference)
status = table.groupby("aligner")["status"].apply(lambda s: int((s == "ok").sum())).rename("n_ok").reset_index()
acc = status.merge(acc, on="aligner", how="left")
write_parquet(acc, snakemake.output.accuracy)
for row in acc.itertuples(index=False):
    if row.aligner == snakemake.params.reference:
        log.info("%s (reference): %d ok", row.aligner, row.n_ok)
        continue
    log.info("%s: %d ok; vs %s on %s prompts: mean %.1f ms, median %.1f ms", row.aligner, row.n_ok,
             snakemake.params.reference, row.n_prompts, row.mean_abs_err_ms, row.median_abs_err_ms)
