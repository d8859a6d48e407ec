"""crosstrace: causal tracing of factual recall across text and speech."""

import os

# Idle OpenMP threads sleep instead of spinning. With spinning, a busy machine (other jobs, Snakemake
# running rules side by side) made small forward passes 50-100x slower. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
