"""The tracer as researchers use it: a loaded model, settings, and typed per-prompt results."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from ..models.adapter import KINDS, Adapter, get_adapter
from .atp import AtpConfig, trace_atp
from .fast import supports_fast, trace_fast
from .noise import NoiseConfig, draw_noise, embedding_std
from .reference import trace_reference
from .state import Corruption, KindTrace
from .tokens import category_means, encode_prompt

log = logging.getLogger(__name__)
ENGINES = ("auto", "fast", "reference", "atp")  # atp: approximate (attribution patching)


@dataclass(frozen=True)
class TraceSettings:
    kinds: tuple[str, ...] = KINDS
    window: int = 10
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    engine: str = "auto"
    max_rows: int | None = 512  # None: from free GPU memory (512 on CPU)
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

    def trace_ids(self, known_id: int, input_ids: list[int], span: tuple[int, int], noise: torch.Tensor | None = None) -> PromptTrace:
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
