"""Resolve the model spec to a loadable folder (converting the offline GGUF once into the cache)."""

from crosstrace.io import setup_logging, write_json
from crosstrace.models.loading import prepare_model

log = setup_logging(snakemake.log[0])
spec = snakemake.params.spec
path = prepare_model(spec["path"], snakemake.params.cache_dir)
log.info("model %s: %s -> %s", spec["name"], spec["path"], path)
write_json({**spec, "resolved": path}, snakemake.output[0])
