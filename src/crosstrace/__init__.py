"""crosstrace: causal tracing of factual recall across text and speech."""

import os

# Idle OpenMP threads sleep instead of spinning. With spinning, a busy machine (other jobs, Snakemake
# running rules side by side) made small forward passes 50-100x slower. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# A GPU job of a local run takes its own device here, before torch loads (crosstrace.devices); elsewhere
# (CPU jobs, cluster jobs, notebooks, the CLI) this does nothing.
from .devices import claim_for_job  # noqa: E402 - after the thread policy, before anything imports torch

claim_for_job()

__version__ = "0.1.0"
