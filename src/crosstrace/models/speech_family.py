"""The speech-LM family contract: how a family turns a spoken prompt into the language model's input.

A *speech family* is a way of feeding speech to a causal language model. SpiritLM writes speech as discrete
unit tokens in its vocabulary (``[Hu17]``); Qwen2-Audio writes it as continuous vectors, the projected output
of an audio encoder, at placeholder positions. The causal tracing of this project needs the same six things
from either, and nothing else (docs/speech-lms.md):

============================  ==========================================================================
loading                       :meth:`SpeechFamily.prepare` (a local folder or a hub id, checked) and
                              :meth:`SpeechFamily.load`: the model, its tokenizer and whatever builds its
                              speech input (a processor from the same folder, or a speech tokenizer)
T→T and S→T inputs            :meth:`SpeechLM.t2t` (ids, offsets, subject span) and :meth:`SpeechLM.s2t`
                              (ids with the audio's positions, an :class:`LMInput`)
seconds → input positions     :attr:`LMInput.audio`, an :class:`AudioGrid`: the audio frame rate, how
                              many frames each audio position holds, and where the audio starts; the one
                              equation that maps seconds through it (paper eq. 2) is
                              :mod:`crosstrace.speech.units`
corrupted positions           the LM positions of the subject's text tokens (:meth:`SpeechLM.text_tokens`
                              and the grid); noise ν·ε is added to the input embeddings there
noise basis                   :func:`input_embeddings`: the input embeddings at the corrupted positions
last token                    the last input position (:attr:`LMInput.last`), whose output predicts the
                              answer; :attr:`SpeechLM.last_token` names it per modality
speech input step             :meth:`SpeechFamily.speech_encoder`: what the workflow's ``speech_units``
                              rule runs on each clip (SpiritLM: HuBERT units; Qwen2-Audio: the count of
                              audio positions, from the processor, no model run)
============================  ==========================================================================

The engines trace :attr:`SpeechLM.model`, an ordinary causal LM over input embeddings (``inputs_embeds``):
for a discrete family the embeddings of the ids, for a continuous one :meth:`SpeechLM.inputs_embeds`.

A family lives in one module, ``crosstrace.models.<family>`` (the config's ``family`` with ``-`` written
``_``), which defines ``FAMILY``, an object with ``name``, ``prepare(spec)`` and ``load(spec)``;
:func:`speech_family` finds it. A third family needs that module and its name in the config's families.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from ..spans import Encoded, SpanError
from .loading import ModelLoadError


class AudioInputError(SpanError):
    """Audio that cannot become this family's input (too long for the encoder, a span in its padding): the
    record is quarantined with this message, as for any span problem."""


@dataclass(frozen=True)
class AudioGrid:
    """Where a clip's audio sits in the LM input, and how seconds reach it.

    Audio position ``i`` (LM position ``offset + i``) holds the encoder frames
    ``[F_i, F_i + run_lengths[i])``, ``F_i = sum(run_lengths[:i])``, at ``rate`` frames per second. SpiritLM: the
    deduplicated units and their run lengths of 25 Hz HuBERT frames; Qwen2-Audio: one frame per position at the
    encoder's output rate (25 Hz), only the unpadded ones. Eq. 2 maps ``[t_start, t_end)`` s to frames
    ``[floor(t_start·rate), ceil(t_end·rate))``, the run lengths map frames to positions.
    """

    rate: float
    run_lengths: tuple[int, ...]
    offset: int

    def __repr__(self) -> str:
        return (f"AudioGrid(rate={self.rate:g} Hz, {self.n_positions} positions at {self.offset}.., "
                f"{self.n_frames} frames = {self.seconds:.3f} s)")

    def __post_init__(self):
        if not self.rate > 0:
            raise ValueError(f"audio frame rate must be positive, got {self.rate}")
        if not self.run_lengths or any(int(r) <= 0 for r in self.run_lengths):
            raise ValueError("an audio grid needs at least one position, each of at least one frame")

    @property
    def n_positions(self) -> int:
        return len(self.run_lengths)

    @property
    def n_frames(self) -> int:
        return int(sum(self.run_lengths))

    @property
    def seconds(self) -> float:
        """The time the grid's frames cover, from the clip's start."""
        return self.n_frames / self.rate

    @property
    def positions(self) -> range:
        """The LM positions of the audio."""
        return range(self.offset, self.offset + self.n_positions)

    def check_inside(self, t_start: float, t_end: float, what: str = "span") -> None:
        """Refuse a time span that starts at or after the last real frame (it would fall in the encoder's
        padding, or past the audio): eq. 2 would give it no position."""
        if t_start >= self.seconds:
            raise AudioInputError(f"the {what} [{t_start:.3f}, {t_end:.3f}) s starts after the last real audio frame "
                                  f"({self.n_frames} frames at {self.rate:g} Hz = {self.seconds:.3f} s): it falls in "
                                  "the encoder's padding, past the audio")


@dataclass
class LMInput:
    """One prompt as the language model reads it.

    ``input_ids``: every position's token id (a continuous family's audio positions hold its placeholder id);
    ``audio``: where the audio sits (None for T→T); ``features``: what a continuous family needs to build the
    input embeddings (Qwen2-Audio: the log-mel features and their mask), None for a discrete one.
    """

    input_ids: list[int]
    audio: AudioGrid | None = None
    features: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def last(self) -> int:
        """The position whose output predicts the answer: the last one."""
        return len(self.input_ids) - 1


@dataclass(frozen=True)
class SpokenPrompt:
    """A spoken prompt as the speech steps leave it: the waveform (``samples`` at 16 kHz, or the WAV at
    ``path``; continuous families read it), and for discrete families its deduplicated units and their run
    lengths (the units step). A family reads what it needs and ignores the rest."""

    samples: np.ndarray | None = None
    units: Sequence[int] | None = None
    run_lengths: Sequence[int] | None = None
    path: str | None = None

    def waveform(self) -> tuple[np.ndarray, int] | None:
        """(mono float32 samples, sampling rate): ``samples`` at 16 kHz, else the WAV at ``path``; None without
        either. A missing or unreadable file is an :class:`AudioInputError` naming it."""
        if self.samples is not None:
            return np.asarray(self.samples, dtype=np.float32), 16000
        if not self.path:
            return None
        from ..audio import read_wav

        try:
            return read_wav(self.path)
        except (OSError, RuntimeError, ValueError) as e:  # soundfile raises LibsndfileError (a RuntimeError)
            raise AudioInputError(f"cannot read the clip {self.path}: {e}") from None


@runtime_checkable
class SpeechLM(Protocol):
    """A loaded speech LM: what the modalities and the engines ask of every family."""

    name: str
    model: torch.nn.Module  # the causal LM the engines trace (inputs_embeds in, logits out)
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    family: ClassVar[str]
    #: what the S→T input needs from the speech steps: "units" (a speech tokenizer's units) or "waveform"
    speech_input: ClassVar[str]
    #: the token whose output predicts the answer, per modality (for docs, logs and figure labels)
    last_token: ClassVar[dict[str, str]]

    def t2t(self, prompt: str, subject: str | None = None) -> Encoded:
        """T→T ids, character offsets into ``prompt`` (template tokens get (0, 0)) and the subject span."""

    def text_tokens(self, prompt: str, subject: str | None = None) -> Encoded:
        """The prompt's text tokens exactly as they stand in its T→T input (offsets into ``prompt``, the
        subject span among them; no subject: span (0, 0)): the rows that S→T traces are aggregated to."""

    def s2t(self, spoken: SpokenPrompt) -> LMInput:
        """S→T input: the family's template around the audio, with the audio's :class:`AudioGrid`."""

    def inputs_embeds(self, inp: LMInput) -> torch.Tensor | None:
        """(T, hidden) input embeddings when they are not the embeddings of ``inp.input_ids`` (continuous
        families), else None: the engines then embed the ids."""

    def text_bad_words(self) -> list[list[int]] | None:
        """``bad_words_ids`` for greedy text answers (the Known filter): the speech and marker tokens a text
        answer must not contain, or None."""

    def token_labels(self, input_ids: Sequence[int], tokens: Sequence[str]) -> list[str]:
        """Display strings of an input's positions (figures, tables): the tokenizer's strings, with the
        family's speech tokens named readably."""


@torch.no_grad()
def input_embeddings(lm: SpeechLM, inp: LMInput) -> torch.Tensor:
    """(T, hidden): the input embeddings the engines corrupt, for any family. The noise basis of a modality is
    these vectors at the corrupted positions over the dataset's subjects (:func:`crosstrace.trace.noise.vectors_std`):
    for SpiritLM the embedding rows of the subject's units, for Qwen2-Audio its projected audio frames."""
    x = lm.inputs_embeds(inp)
    if x is not None:
        return x
    embed = lm.model.get_input_embeddings()
    return embed(torch.tensor(inp.input_ids, device=embed.weight.device))


class SpeechFamily(Protocol):
    """The module-level ``FAMILY`` of a family module."""

    name: str

    def prepare(self, spec) -> str:
        """A loadable path (a checked local folder, or a hub id as given)."""

    def load(self, spec) -> SpeechLM:
        """The loaded family (``spec.resolved`` if prepared, else ``spec.path``)."""

    def speech_encoder(self, spec):
        """What the ``speech_units`` rule runs on each clip: an object whose ``encode_file(path)`` returns a
        :class:`crosstrace.models.hubert.Units` (units, run lengths, frames; for a continuous family one run
        per audio position and no units), raising ``ValueError`` / ``RuntimeError`` / ``OSError`` for a clip
        the family cannot read (the row is quarantined with that reason)."""

    def with_tokenizer(self, spec, tokenizer) -> SpeechLM:
        """The family's prompts from a tokenizer alone, without weights (``model`` None), where the family
        can build them so (SpiritLM); a family that needs more raises :class:`ModelLoadError`."""


def module_name(family: str) -> str:
    """``crosstrace.models.<family>`` with ``-`` written ``_`` (``qwen2-audio`` → ``crosstrace.models.qwen2_audio``)."""
    return f"{__package__}.{family.replace('-', '_')}"


def speech_family(family: str) -> SpeechFamily:
    """The ``FAMILY`` object of a speech family's module; a one-line error when there is none."""
    try:
        module = importlib.import_module(module_name(family))
    except ModuleNotFoundError as e:
        if e.name != module_name(family):
            raise
        raise ModelLoadError(f"no speech family {family!r}: expected a module {module_name(family)}") from None
    fam = getattr(module, "FAMILY", None)
    if fam is None:
        raise ModelLoadError(f"{module_name(family)} defines no FAMILY, so it is not a speech family")
    return fam


__all__ = ["AudioGrid", "AudioInputError", "LMInput", "SpeechFamily", "SpeechLM", "SpokenPrompt", "input_embeddings",
           "module_name", "speech_family"]
