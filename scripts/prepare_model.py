"""Resolve the model entry to a loadable folder (HF: converting the offline GGUF once into the cache;
SpiritLM: check the checkpoint root)."""

from crosstrace.io import setup_logging
from crosstrace.steps import prepare_model

log = setup_logging(snakemake.log[0])
prepare_model(dict(snakemake.params.spec), snakemake.params.cache_dir, snakemake.output[0], log)
