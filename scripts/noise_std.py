"""ν's basis per model and modality. T→T: std of the input embeddings of all dataset subjects' tokens
(ROME's s3). S→T: std of the input embeddings of the unit tokens inside every subject span (the units of
the subject's text tokens, known.parquet) over all speech prompts with a span."""

from crosstrace.io import setup_logging
from crosstrace.steps import noise_basis

log = setup_logging(snakemake.log[0])
inp = snakemake.input
noise_basis(inp.model, snakemake.wildcards.modality, inp.records, snakemake.output[0], inp.validation, log)
