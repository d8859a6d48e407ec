"""Resolve the model spec to a loadable folder (HF: converting the offline GGUF once into the cache;
SpiritLM: check the checkpoint root, including the speech tokenizer when s2t is traced)."""

from crosstrace.io import setup_logging, write_json
from crosstrace.modality import prepare_any

log = setup_logging(snakemake.log[0])
spec = snakemake.params.spec
path = prepare_any(spec, snakemake.params.cache_dir)
log.info("model %s (%s): %s -> %s", spec["name"], spec.get("family", "hf"), spec["path"], path)
write_json({**spec, "resolved": path}, snakemake.output[0])
