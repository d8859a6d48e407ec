"""The tracer as researchers use it: a loaded model, settings, and typed per-prompt results."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..models.adapter import KINDS, Adapter, get_adapter, window_layers
from .atp import AtpConfig, trace_atp
from .fast import supports_fast, trace_fast
from .noise import NoiseConfig, draw_noise, embedding_std
from .reference import trace_reference
from .state import Corruption, KindTrace
from .tokens import category_means, encode_prompt

log = logging.getLogger(__name__)
ENGINES = ("auto", "fast", "reference", "atp")  # atp: approximate (attribution patching)
# Prompts at least this long get a cost estimate (one timed forward pass) before they are traced; a
# warning goes to the console when the estimate exceeds LONG_TRACE_SECONDS.
LONG_PROMPT_TOKENS = 48
LONG_TRACE_SECONDS = 120.0


class PromptTooLongError(ValueError):
    """A prompt over ``TraceSettings.max_tokens``: quarantined in the workflow, an error in the CLI."""


@dataclass(frozen=True)
class TraceSettings:
    kinds: tuple[str, ...] = KINDS
    window: int = 10
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    engine: str = "auto"
    max_rows: int | None = 512  # None: from free GPU memory (512 on CPU)
    max_tokens: int | None = None  # longer prompts are refused (PromptTooLongError): cost grows with T²
    atp: AtpConfig = field(default_factory=AtpConfig)  # options of the approximate engine only

    def __post_init__(self):
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {self.kinds}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")


@dataclass
class PromptTrace:
    """Everything traced for one prompt: shared run data plus one KindTrace per kind."""

    known_id: int
    input_ids: list[int]
    tokens: list[str]
    subject_span: tuple[int, int]
    answer_id: int
    answer: str
    p_clean: float
    p_corrupted: float
    noise_scale: float
    kinds: dict[str, KindTrace]

    def categories(self, kind: str) -> dict[str, np.ndarray]:
        return category_means(self.kinds[kind].ie, self.subject_span)


class Tracer:
    """A model ready for tracing. ``noise_std`` is the subject-embedding std (for ν = multiple × std)."""

    def __init__(self, model, tokenizer, settings: TraceSettings, noise_std: float | None = None):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.adapter: Adapter = get_adapter(model)
        self.noise_std = noise_std
        self.noise_scale = settings.noise.scale(noise_std)
        engine = settings.engine
        if engine == "auto":
            engine = "fast" if supports_fast(model) else "reference"
        elif engine == "fast" and not supports_fast(model):
            raise ValueError(f"the fast engine supports model types {sorted(['llama', 'mistral', 'qwen2'])}; "
                             f"got {model.config.model_type!r} (use engine: reference)")
        self.engine = engine

    @property
    def device(self) -> torch.device:
        return self.adapter.embed.weight.device

    @property
    def hidden_size(self) -> int:
        return self.adapter.embed.weight.shape[1]

    def corruption(self, known_id: int, span: tuple[int, int], noise: torch.Tensor | None = None) -> Corruption:
        """Seeded noise for this prompt (or an explicit unscaled ε of shape samples × span × hidden)."""
        n = span[1] - span[0]
        cfg = self.settings.noise
        if noise is None:
            noise = draw_noise(cfg.seed, known_id, cfg.samples, n, self.hidden_size, cfg.kind)
        return Corruption(span, self.noise_scale * noise.to(torch.float32))

    def check_length(self, n_tokens: int) -> None:
        if self.settings.max_tokens is not None and n_tokens > self.settings.max_tokens:
            raise PromptTooLongError(f"prompt has {n_tokens} tokens, over the limit of {self.settings.max_tokens} "
                                     "(max_prompt_tokens; tracing cost grows with the square of the length)")

    def estimate_seconds(self, input_ids: list[int], span: tuple[int, int]) -> float:
        """Seconds to trace this prompt here: one timed forward pass of samples + 1 rows, times the number
        of such passes the engine needs (:func:`trace_passes`). A rough guide, not a benchmark."""
        s = self.settings
        ids = torch.tensor([input_ids] * (s.noise.samples + 1), device=self.device)
        with torch.no_grad():
            t0 = time.perf_counter()
            self.model(input_ids=ids)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            one = time.perf_counter() - t0
        L = self.adapter.num_layers
        return one * sum(trace_passes(k, len(input_ids), span[0], L, s.window, self.engine) for k in s.kinds)

    def trace_ids(self, known_id: int, input_ids: list[int], span: tuple[int, int], noise: torch.Tensor | None = None) -> PromptTrace:
        self.check_length(len(input_ids))
        if len(input_ids) >= LONG_PROMPT_TOKENS:
            est = self.estimate_seconds(input_ids, span)
            if est > LONG_TRACE_SECONDS:
                log.warning("known_id %s: %d tokens; tracing it will take about %s here (%s engine, %d kinds, %d draws; "
                            "cost grows with the square of the prompt length)", known_id, len(input_ids),
                            _duration(est), self.engine, len(self.settings.kinds), self.settings.noise.samples,
                            extra={"console": True})
        ids = torch.tensor(input_ids, device=self.device)
        corruption = self.corruption(known_id, span, noise)
        s = self.settings
        if self.engine == "fast":
            kinds = trace_fast(self.model, self.adapter, ids, corruption, s.kinds, s.window, s.max_rows)
        elif self.engine == "atp":
            kinds = trace_atp(self.model, self.adapter, ids, corruption, s.kinds, s.window, s.atp)
        else:
            kinds = trace_reference(self.model, self.adapter, ids, corruption, s.kinds, s.window)
        first = next(iter(kinds.values()))
        tokens = [self.tokenizer.decode([i]) for i in input_ids]
        return PromptTrace(known_id, list(input_ids), tokens, span, first.answer_id, self.tokenizer.decode([first.answer_id]),
                           first.p_clean, first.p_corrupted, self.noise_scale, kinds)

    def trace_text(self, known_id: int, prompt: str, subject: str, noise: torch.Tensor | None = None) -> PromptTrace:
        enc = encode_prompt(self.tokenizer, prompt, subject)
        return self.trace_ids(known_id, enc.input_ids, enc.subject_span, noise)


def trace_passes(kind: str, T: int, b: int, L: int, window: int, engine: str) -> float:
    """Work of tracing one kind of a T-token prompt whose subject starts at token b, in forward passes of
    the whole prompt (samples + 1 rows, T positions, L blocks).

    Reference: T·L restored passes plus the clean one. AtP: about 4. Fast: each restoration (t ≥ b, layer l) runs the
    blocks after its first patched one over positions t..T-1 only; the clean and corrupted runs are
    counted once per kind (a slight overestimate when several kinds share them).
    """
    if engine == "reference":
        return 1.0 + T * L
    if engine == "atp":  # approximate: clean and corrupted passes and one backward pass (about two)
        return 4.0
    starts = [layer + 1 if kind == "hidden" else window_layers(layer, L, kind, window).start + 1 for layer in range(L)]
    blocks = sum(max(0, L - s) for s in starts)
    positions = sum(T - t for t in range(b, T))
    return 1.0 + positions * blocks / (T * L)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def subject_embedding_std(model, tokenizer, subjects: list[str]) -> float:
    """ROME's s3 statistic: std of the input embeddings of every token of every subject tokenized alone."""
    ids = [tokenizer(s)["input_ids"] for s in subjects]
    return embedding_std(get_adapter(model).embed, ids)


def trace_prompt(model, tokenizer, prompt: str, subject: str, settings: TraceSettings | None = None,
                 noise_std: float | None = None, known_id: int = 0, noise: torch.Tensor | None = None) -> PromptTrace:
    """Trace one prompt. Without ``noise_std`` the std is taken over this prompt's subject alone."""
    settings = settings or TraceSettings()
    if noise_std is None and settings.noise.absolute is None:
        noise_std = subject_embedding_std(model, tokenizer, [subject])
    return Tracer(model, tokenizer, settings, noise_std).trace_text(known_id, prompt, subject, noise)
