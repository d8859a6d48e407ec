"""Fetch known_1000.json (verified by sha256), falling back to the bundled copy offline."""

from crosstrace.data import fetch_known
from crosstrace.io import setup_logging

log = setup_logging(snakemake.log[0])
p = snakemake.params
source = fetch_known(snakemake.output[0], url=p.url, fallback=p.fallback, expected=p.sha256)
log.info("known_1000.json from %s (%s), sha256 verified", p.url if source == "download" else p.fallback, source)
