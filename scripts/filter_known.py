"""Known-t2t / Known-s2t: label every record exact / partial / none by greedy decoding (nothing dropped).

S→T: the prompt table (speech, QC, alignment, units, span) is built first; quarantined rows keep their
reason and are not decoded."""

from crosstrace.io import setup_logging
from crosstrace.steps import known_table

log = setup_logging(snakemake.log[0])
p, inp, modality = snakemake.params, snakemake.input, snakemake.wildcards.modality
speech = ({k: inp[k] for k in ("speech_records", "manifest", "qc", "alignment", "units")}
          if modality == "s2t" else None)
# filter.batch_size changes speed only, hence read from the config and not a rule param (a param change reruns)
known_table(inp.model, modality, inp.records, p.max_new_tokens, snakemake.config["filter"]["batch_size"],
            snakemake.output.table, inp.validation, speech=speech, aligner=p.aligner, threads=snakemake.threads,
            log=log, rows=p.rows)
