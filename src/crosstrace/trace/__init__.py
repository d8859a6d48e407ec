"""Causal tracing: clean / corrupted / restored runs, IE, token categories and AIE.

Public entry points: :func:`trace_prompt` (one prompt, notebook-friendly) and :class:`Tracer`
(a loaded model plus settings, used by the workflow to trace many prompts).
"""

from ..spans import category_means, category_positions
from ..vocabulary import CATEGORIES
from .api import PromptTrace, Tracer, TraceSettings, trace_prompt
from .noise import NoiseConfig, draw_noise, embedding_std
from .state import Corruption, KindTrace
from .tokens import encode_prompt

__all__ = [
    "CATEGORIES",
    "Corruption",
    "KindTrace",
    "NoiseConfig",
    "PromptTrace",
    "TraceSettings",
    "Tracer",
    "category_means",
    "category_positions",
    "draw_noise",
    "embedding_std",
    "encode_prompt",
    "trace_prompt",
]
