"""Known-t2t / Known-s2t: label every record exact / partial / none by greedy decoding (nothing dropped).

S→T: the prompt table (speech, QC, alignment, units, span) is built first from the speech inputs the rule
gives it (common.smk, filter_inputs); quarantined rows keep their reason and are not decoded."""

from crosstrace.io import setup_logging
from crosstrace.steps import known_table

log = setup_logging(snakemake.log[0])
p, inp = snakemake.params, snakemake.input
speech = {k: inp[k] for k in ("speech_records", "manifest", "qc", "alignment", "units") if k in inp.keys()}
# filter.batch_size changes speed only, hence read from the config and not a rule param (a param change reruns)
known_table(inp.model, snakemake.wildcards.modality, inp.records, p.max_new_tokens,
            snakemake.config["filter"]["batch_size"], snakemake.output.table, inp.validation, speech=speech,
            aligner=p.aligner, rows=p.rows, threads=snakemake.threads, log=log)
