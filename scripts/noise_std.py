"""ν's basis: std of the input embeddings of all dataset subjects' tokens (ROME's s3), per model and modality."""

import pandas as pd

from crosstrace.io import read_json, setup_logging, write_json
from crosstrace.models.loading import load_model
from crosstrace.trace.api import subject_embedding_std

log = setup_logging(snakemake.log[0])
m = read_json(snakemake.input.model)
lm = load_model(m["resolved"], m.get("device", "cpu"), m.get("dtype", "float32"), name=m["name"])
subjects = pd.read_parquet(snakemake.input.records, columns=["subject"])["subject"].tolist()
std = subject_embedding_std(lm.model, lm.tokenizer, subjects)
log.info("%s %s: std of subject-token embeddings over %d subjects = %.6f", m["name"], snakemake.wildcards.modality, len(subjects), std)
write_json({"model": m["name"], "modality": snakemake.wildcards.modality, "std": std, "n_subjects": len(subjects)}, snakemake.output[0])
