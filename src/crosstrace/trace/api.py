"""The tracer as researchers use it: a loaded model, settings, and typed per-prompt results."""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..answers import ANSWER_MODES, answer_label, answer_tokens
from ..grids import grid_frame
from ..models.adapter import Adapter, get_adapter, window_layers
from ..spans import SpanError, category_means
from ..vocabulary import CATEGORIES, KINDS
from .atp import AtpConfig, trace_atp
from .backoff import is_out_of_memory, with_backoff
from .fast import auto_max_rows, supports_fast, trace_fast
from .noise import NoiseConfig, draw_noise, embedding_std
from .reference import trace_reference
from .state import Corruption, KindTrace, clean_embeds
from .tokens import attribute_token_ids, encode_prompt, encode_text, subject_token_ids, token_strings

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
    max_rows: int | None = 512  # rows per batch, halved on out-of-memory (backoff.py); None: from free GPU memory
    max_tokens: int | None = None  # longer prompts are refused (PromptTooLongError): cost grows with T²
    answer: str = "top1"  # what P[o] reads: top1 | attribute_first | attribute_full (crosstrace.answers)
    atp: AtpConfig = field(default_factory=AtpConfig)  # options of the approximate engine only

    def __post_init__(self):
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {self.kinds}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.answer not in ANSWER_MODES:
            raise ValueError(f"answer must be one of {ANSWER_MODES}, got {self.answer!r}")


@dataclass(repr=False)
class PromptTrace:
    """Everything traced for one prompt: shared run data plus one KindTrace per kind.

    ``print(trace)`` summarises it; ``.plot()`` draws it (ROME-style heatmaps), ``.to_frame()`` and
    ``.categories()`` give tables; the arrays are ``.kinds[kind].p_restored`` and ``.kinds[kind].ie``
    (tokens × layers).
    """

    known_id: int | None  # None: a free prompt (trace_prompt without a known_id), not a dataset record
    input_ids: list[int]
    tokens: list[str]
    subject_span: tuple[int, int]
    answer_id: int
    answer: str
    p_clean: float
    p_corrupted: float
    noise_scale: float
    kinds: dict[str, KindTrace]
    prompt: str = ""
    subject: str = ""
    window: int | None = None  # mlp / attn restoration window (figure labels)
    answer_ids: tuple[int, ...] = ()  # every answer token read (attribute_full: all the attribute's)
    answer_mode: str = "top1"
    attribute: str | None = None  # the expected answer, when the trace was given one

    @property
    def n_layers(self) -> int:
        return int(next(iter(self.kinds.values())).p_restored.shape[1])

    def __repr__(self) -> str:
        b, e = self.subject_span
        head = "free prompt" if self.known_id is None else f"known_id={self.known_id}"
        lines = [f"PromptTrace({head}: {self.prompt or ''.join(self.tokens)!r}",
                 f"  subject {self.subject or ''.join(self.tokens[b:e])!r} = tokens {b}..{e - 1} of {len(self.tokens)}, "
                 f"{self.n_layers} layers, noise ν = {self.noise_scale:.4g}",
                 f"  answer o = {self.answer!r} ({answer_label(self.answer_mode)}): P_clean = {self.p_clean:.4f}, "
                 f"P_corrupted = {self.p_corrupted:.4f}"
                 + ("  (corruption does not lower P(o))" if self.p_corrupted >= self.p_clean else "")]
        for kind, kt in self.kinds.items():
            t, layer = divmod(int(np.argmax(kt.ie)), kt.ie.shape[1])
            lines.append(f"  {kind:6s} peak IE {kt.ie.max():+.4f} at token {t} {self.tokens[t]!r}, layer {layer}")
        lines.append("  .plot(), .to_frame(), .categories(), .kinds[kind].ie)")
        return "\n".join(lines)

    def categories(self, kind: str | None = None) -> pd.DataFrame:
        """Per-category IE (mean over the category's token positions): rows (kind, category), columns layers.

        With ``kind``, rows are the categories of that kind only. Categories the prompt lacks (a one-token
        subject has no middle) are left out.
        """
        kinds = [kind] if kind is not None else list(self.kinds)
        rows = {(k, c): v for k in kinds for c, v in category_means(self.kinds[k].ie, self.subject_span).items()}
        order = sorted(rows, key=lambda kc: (kinds.index(kc[0]), CATEGORIES.index(kc[1])))
        df = pd.DataFrame([rows[kc] for kc in order], index=pd.MultiIndex.from_tuples(order, names=["kind", "category"]))
        df.columns.name = "layer"
        return df.loc[kind] if kind is not None else df

    def to_frame(self) -> pd.DataFrame:
        """The long IE table: one row per (kind, token, layer) with P_restored, IE and the prompt's constants
        (the workflow's ``ie_per_prompt.parquet`` rows, without model / modality / settings columns)."""
        T = len(self.input_ids)
        df = pd.concat([grid_frame({"ie": kt.ie, "p_restored": kt.p_restored}, self.tokens).assign(kind=kind)
                        for kind, kt in self.kinds.items()], ignore_index=True)
        df.insert(0, "kind", df.pop("kind"))
        # answer_mode: what P[o] reads (trace.answer); answer_tokens: how many tokens o has (answer_id: the first)
        const = {"known_id": self.known_id, "p_clean": self.p_clean, "p_corrupted": self.p_corrupted,
                 "answer_id": self.answer_id, "answer": self.answer, "answer_mode": self.answer_mode,
                 "answer_tokens": len(self.answer_ids) or 1, "subject_start": self.subject_span[0],
                 "subject_end": self.subject_span[1], "n_tokens": T, "noise_scale": self.noise_scale}
        for k, v in const.items():
            df[k] = v
        if self.known_id is None:  # a free prompt: no id (nullable, so the column stays an integer column)
            df["known_id"] = pd.array([None] * len(df), dtype="Int64")
        return df

    def plot(self, kinds: tuple[str, ...] | list[str] | str | None = None, attribute: str | None = None):
        """ROME-style heatmaps, one panel per kind (token rows, layer columns): a matplotlib Figure.

        The figure is registered with pyplot, so a notebook shows it and ``plt.show()`` opens it; save
        it with ``fig.savefig("trace.png")``. ``attribute`` (the expected answer; default: the one traced
        with, if any) flags an answer token that does not start it. The title names the answer mode.
        """
        from ..filtering import answer_matches
        from ..report.figures import prompt_trace_figure

        kinds = [kinds] if isinstance(kinds, str) else list(kinds or self.kinds)
        missing = [k for k in kinds if k not in self.kinds]
        if missing:
            raise ValueError(f"kinds {missing} were not traced; traced: {list(self.kinds)}")
        attribute = attribute if attribute is not None else self.attribute
        title = (f"known_id {self.known_id}: " if self.known_id is not None else "") + (self.prompt or "".join(self.tokens))
        return prompt_trace_figure(self.tokens, self.subject_span, {k: self.kinds[k].p_restored for k in kinds},
                                   self.answer, self.p_clean, self.p_corrupted, window=self.window, title=title,
                                   attribute=attribute,
                                   answer_ok=None if attribute is None else answer_matches(self.answer, attribute),
                                   pyplot=True, answer_mode=self.answer_mode)


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

    def estimate_seconds(self, input_ids: list[int], span: tuple[int, int],
                         inputs_embeds: torch.Tensor | None = None) -> float | None:
        """Seconds to trace this prompt here: one timed forward pass of samples + 1 rows, times the number
        of such passes the engine needs (:func:`trace_passes`). A rough guide, not a benchmark. None when
        that pass runs out of memory (the trace itself then backs off, :mod:`.backoff`)."""
        s = self.settings
        prompt = torch.tensor(input_ids, device=self.device) if inputs_embeds is None else inputs_embeds
        x = clean_embeds(self.adapter, prompt).repeat(s.noise.samples + 1, 1, 1)
        with torch.no_grad():
            t0 = time.perf_counter()
            try:
                self.model(inputs_embeds=x)
            except Exception as err:  # noqa: BLE001 - anything but out-of-memory is re-raised
                if not is_out_of_memory(err):
                    raise
                return None
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            one = time.perf_counter() - t0
        L = self.adapter.num_layers
        return one * sum(trace_passes(k, len(input_ids), span[0], L, s.window, self.engine) for k in s.kinds)

    def trace_ids(self, known_id: int, input_ids: list[int], span: tuple[int, int], noise: torch.Tensor | None = None,
                  attribute_ids: list[int] | None = None, inputs_embeds: torch.Tensor | None = None) -> PromptTrace:
        """``attribute_ids``: the attribute's tokens after the prompt (:func:`.tokens.attribute_token_ids`),
        needed by the attribute answer modes, ignored by top1. ``inputs_embeds``: the prompt's (T, hidden) input
        embeddings when they are not those of ``input_ids`` (a continuous-input speech family, e.g. Qwen2-Audio's
        audio frames); the noise is then added to them and ``input_ids`` only name the positions."""
        self.check_length(len(input_ids))
        if inputs_embeds is not None and inputs_embeds.shape[0] != len(input_ids):
            raise ValueError(f"inputs_embeds has {inputs_embeds.shape[0]} positions, input_ids {len(input_ids)}")
        if len(input_ids) >= LONG_PROMPT_TOKENS:
            est = self.estimate_seconds(input_ids, span, inputs_embeds)
            if est is not None and est > LONG_TRACE_SECONDS:
                log.warning("known_id %s: %d tokens; tracing it will take about %s here (%s engine, %d kinds, %d draws; "
                            "cost grows with the square of the prompt length)", known_id, len(input_ids),
                            _duration(est), self.engine, len(self.settings.kinds), self.settings.noise.samples,
                            extra={"console": True})
        prompt = torch.tensor(input_ids, device=self.device) if inputs_embeds is None else inputs_embeds
        corruption = self.corruption(known_id, span, noise)
        s = self.settings
        answer = answer_tokens(s.answer, attribute_ids)
        # Out of memory: the prompt again with half the rows per batch, down to one (backoff.py).
        widest = self.rows_per_batch(len(input_ids) + len(answer or [0]) - 1, corruption.noise.shape[0])
        kinds = with_backoff(lambda rows: self._run_engine(prompt, corruption, answer, rows), widest, len(input_ids),
                             what=f"known_id {known_id}")
        first = next(iter(kinds.values()))
        tokens = token_strings(self.tokenizer, input_ids)
        # one token: decoded on its own, readably (partial UTF-8 as bytes); several: decoded together
        answer_text = (token_strings(self.tokenizer, [first.answer_id])[0] if len(first.answer_ids) == 1
                       else self.tokenizer.decode(list(first.answer_ids)))
        return PromptTrace(known_id, list(input_ids), tokens, span, first.answer_id, answer_text, first.p_clean,
                           first.p_corrupted, self.noise_scale, kinds, window=s.window, answer_ids=first.answer_ids,
                           answer_mode=s.answer)

    def rows_per_batch(self, n_positions: int, samples: int) -> int:
        """The engine's widest batch in rows, capped by ``max_rows`` (None: by free GPU memory): where an
        out-of-memory back-off starts halving. Fast: every layer's restoration × noise draw; reference: the
        noise draws; atp: draws × steps."""
        s = self.settings
        widest = samples * {"fast": self.adapter.num_layers, "atp": s.atp.steps}.get(self.engine, 1)
        cap = s.max_rows if s.max_rows is not None else auto_max_rows(self.model, n_positions, self.device)
        return min(widest, cap)

    def _run_engine(self, prompt: torch.Tensor, corruption: Corruption, answer, rows: int) -> dict[str, KindTrace]:
        s = self.settings
        if self.engine == "fast":
            return trace_fast(self.model, self.adapter, prompt, corruption, s.kinds, s.window, rows, answer)
        if self.engine == "atp":
            return trace_atp(self.model, self.adapter, prompt, corruption, s.kinds, s.window, s.atp, answer, rows)
        return trace_reference(self.model, self.adapter, prompt, corruption, s.kinds, s.window, answer, rows)

    def trace_text(self, known_id: int, prompt: str, subject: str, noise: torch.Tensor | None = None,
                   attribute: str | None = None) -> PromptTrace:
        enc = encode_prompt(self.tokenizer, prompt, subject)
        attribute_ids = None
        if self.settings.answer != "top1":
            if not attribute or not attribute.strip():
                raise SpanError(f"trace.answer {self.settings.answer!r} needs the record's attribute; it has none")
            attribute_ids = attribute_token_ids(lambda text: encode_text(self.tokenizer, text), prompt, attribute)
        trace = self.trace_ids(known_id, enc.input_ids, enc.subject_span, noise, attribute_ids)
        trace.prompt, trace.subject, trace.attribute = prompt, subject, attribute
        return trace


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
    return embedding_std(model.get_input_embeddings(), subject_token_ids(tokenizer, subjects))


# Per model object: {dataset path: std}. Weak keys, so a deleted model takes its entry with it.
_DATASET_STD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def dataset_noise_std(model, tokenizer, path: str | Path | None = None) -> float:
    """The workflow's ν basis for T→T: :func:`subject_embedding_std` over the subjects of every valid record
    of the Known dataset (``path``; default: the bundled ``resources/known_1000.json``), computed once per
    model object and then cached. SmolLM2-135M: 0.1167, so ν = 3 × 0.1167 = 0.350."""
    from ..data import BUNDLED_KNOWN, load_known

    path = str(path or BUNDLED_KNOWN)
    cache = _DATASET_STD.setdefault(model, {})
    if path not in cache:
        records, _ = load_known(path, warn_duplicates=False)  # every subject counts, a repeated one too
        cache[path] = subject_embedding_std(model, tokenizer, [r.subject for r in records])
    return cache[path]


def trace_prompt(model, tokenizer, prompt: str, subject: str, settings: TraceSettings | None = None,
                 noise_std: float | str | None = None, known_id: int | None = None, noise: torch.Tensor | None = None,
                 attribute: str | None = None) -> PromptTrace:
    """Trace one prompt with ν = ``settings.noise.multiple`` × ``noise_std``.

    ``noise_std``: a number; ``"dataset"`` for the workflow's value (std of the input embeddings of all
    Known subjects' tokens, :func:`dataset_noise_std`, cached per model); or None for the std over this
    prompt's subject alone (noisier: a few tokens). Ignored when ``settings.noise.absolute`` is set.
    ``attribute``: the expected answer; needed when ``settings.answer`` is not top1 (what P[o] then reads).
    ``known_id``: the record's id, which seeds its noise draws with ``settings.noise.seed``; None (a free
    prompt) draws the noise of id 0 and leaves the trace without an id.
    """
    settings = settings or TraceSettings()
    if noise_std == "dataset":
        noise_std = dataset_noise_std(model, tokenizer)
    elif isinstance(noise_std, str):
        raise ValueError(f"noise_std must be a number, 'dataset' or None, got {noise_std!r}")
    if noise_std is None and settings.noise.absolute is None:
        noise_std = subject_embedding_std(model, tokenizer, [subject])
    trace = Tracer(model, tokenizer, settings, noise_std).trace_text(0 if known_id is None else known_id, prompt,
                                                                      subject, noise, attribute)
    trace.known_id = known_id
    return trace
