"""ν's basis per model and modality. T→T: std of the input embeddings of all dataset subjects' tokens
(ROME's s3). S→T: std of the input embeddings of the unit tokens inside every subject span (the units of
the subject's text tokens, known.parquet) over all speech prompts with a span."""

import pandas as pd

from crosstrace.data import no_records_left
from crosstrace.io import read_json, setup_logging, write_json
from crosstrace.modality import load_any, s2t_subject_embedding_ids, stray_space
from crosstrace.trace.api import subject_embedding_std
from crosstrace.trace.noise import embedding_std

log = setup_logging(snakemake.log[0])
m = read_json(snakemake.input.model)
lm = load_any(m)
modality = snakemake.wildcards.modality
if modality == "s2t":
    table = pd.read_parquet(snakemake.input.records)
    ids = s2t_subject_embedding_ids(table.to_dict("records"), stray_space(m))
    std = embedding_std(lm.model.get_input_embeddings(), ids)
    extra = {"n_subjects": len(ids), "n_tokens": sum(map(len, ids)), "basis": "units of the subject's text tokens (S→T subject spans)"}
else:
    subjects = pd.read_parquet(snakemake.input.records, columns=["subject"])["subject"].tolist()
    if not subjects:
        raise no_records_left(snakemake.input.validation)
    std = subject_embedding_std(lm.model, lm.tokenizer, subjects)
    extra = {"n_subjects": len(subjects), "basis": "subject tokens (each subject tokenized alone)"}
log.info("%s %s: std = %.6f (%s)", m["name"], modality, std, extra)
write_json({"model": m["name"], "modality": modality, "std": std, **extra}, snakemake.output[0])
