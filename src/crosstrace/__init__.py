"""crosstrace: causal tracing of factual recall across text and speech."""

__version__ = "0.1.0"
