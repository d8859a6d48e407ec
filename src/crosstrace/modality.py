"""The two modalities of the study as objects: how a record becomes a traced prompt.

:class:`T2T` (text prompt → text answer) and :class:`S2T` (speech prompt → text answer) answer the same
questions for one loaded model (an ``hf`` causal LM, or a speech family of
:mod:`crosstrace.models.speech_family`: SpiritLM, Qwen2-Audio), so no caller asks which family or modality it
holds; what differs between families, the family object answers:

- ``prompt(record) -> (ids, span)``: the LM input ids and the subject span ``[b, e)`` in them;
- ``lm_input(record) -> (LMInput, span)``: the same with what a continuous family adds (its audio features),
  and ``inputs_embeds(inp)``: the input embeddings the engines corrupt when they are not the ids' own;
- ``answer_ids(record)``: the attribute's text tokens after the prompt (the attribute answer modes);
- ``noise_vectors(table)``: the input embeddings whose std sets the noise scale ν (its std × multiple);
- ``label_known(model, table, …)``: the Known table (greedy decoding from the ids or the input embeddings:
  exact / partial / none);
- ``noise(tracer, record, span)``: which positions of the span are corrupted (S→T: the subject's units only);
- ``trace(tracer, record)``: the :class:`~crosstrace.trace.api.PromptTrace` of a record, through
  :meth:`Tracer.trace_ids <crosstrace.trace.api.Tracer.trace_ids>` for both;
- ``prompt_table(records, aligner=…, **speech_tables)``: the table the Known filter decodes (T→T: the records;
  S→T: one spoken prompt per record, from the speech chain's tables, which the workflow gives only S→T);
- ``token_rows(ie, known)`` (a classmethod: the merge step has no model): the traced positions → the rows the
  token categories are taken over (T→T: its tokens; S→T: its text tokens, each the mean of its units), the
  prompts quarantined on the way, and what the modality adds to ``summary.json``.

:func:`for_run` builds the right one for a model entry, modality and loaded model; :func:`modality_class` names
the class. A new speech family needs no change here (its module answers the contract); a new input modality
is a subclass that answers the same questions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd
import torch

from .config import ConfigError, ModelSpec
from .data import KnownRecord
from .filtering import FILTER_COLUMNS, filter_known
from .models.loading import LoadedModel
from .models.speech_family import LMInput, SpeechLM, input_embeddings, speech_family
from .spans import Encoded, SpanError
from .speech import prompts as s2t_prompts
from .trace.api import PromptTrace, Tracer
from .trace.noise import draw_noise, vectors_std
from .trace.tables import QUARANTINE_COLUMNS, aggregate_by_text_tokens
from .trace.tokens import attribute_token_ids, encode_prompt, encode_text, subject_token_ids


@dataclass(frozen=True)
class T2T:
    """Text → text: the prompt as the family writes it (``hf``: the tokenizer's own; SpiritLM: ``[Text]`` first;
    Qwen2-Audio: the template with the prompt text in its slot)."""

    spec: ModelSpec
    lm: Any  # the loaded model: LoadedModel (hf) or a SpeechLM (crosstrace.models.speech_family)
    name: ClassVar[str] = "t2t"

    @property
    def tokenizer(self):
        return self.lm.tokenizer

    @property
    def family(self) -> SpeechLM | None:
        """The speech family's object, None for an ``hf`` model (text only)."""
        return self.lm if isinstance(self.lm, SpeechLM) else None

    @property
    def stray_space(self) -> bool | None:
        """SpiritLM's prompt layout (docs/spiritlm.md); None for other families."""
        return getattr(self.lm, "stray_space", None)

    def encode(self, prompt: str, subject: str | None = None) -> Encoded:
        """Ids, offsets and the subject span of a T→T prompt (no subject: span (0, 0))."""
        if self.family is not None:
            return self.family.t2t(prompt, subject)
        if subject is None:
            return encode_text(self.tokenizer, prompt)
        return encode_prompt(self.tokenizer, prompt, subject)

    def prompt(self, record: dict) -> tuple[list[int], tuple[int, int]]:
        enc = self.encode(record["prompt"], record["subject"])
        return enc.input_ids, enc.subject_span

    def lm_input(self, record: dict) -> tuple[LMInput, tuple[int, int]]:
        """The record's input (T→T: its ids) and subject span."""
        ids, span = self.prompt(record)
        return LMInput(ids), span

    def inputs_embeds(self, inp: LMInput):
        """(T, hidden) input embeddings when they are not the ids' own (a continuous family's audio), else None."""
        return self.family.inputs_embeds(inp) if self.family is not None else None

    def answer_ids(self, record: dict) -> list[int]:
        """The attribute's text tokens as they follow the T→T prompt (:func:`attribute_token_ids`). S→T reads
        the same tokens after the prompt: the answer is text in both modalities, the same quantity."""
        attribute = record.get("attribute")
        if not attribute or not str(attribute).strip():
            raise SpanError("the record has no attribute to read as the answer")
        return attribute_token_ids(lambda text: self.encode(text), record["prompt"], str(attribute))

    def noise_ids(self, table: pd.DataFrame) -> list[list[int]]:
        """ROME's s3 basis: every dataset subject tokenized alone (:func:`subject_token_ids`)."""
        return subject_token_ids(self.tokenizer, table["subject"].tolist())

    def noise_vectors(self, table: pd.DataFrame) -> list[torch.Tensor]:
        """The input embeddings of :meth:`noise_ids`, one (n, hidden) tensor per subject."""
        w = self.lm.model.get_input_embeddings().weight
        return [w[torch.tensor(ids, dtype=torch.long, device=w.device)] for ids in self.noise_ids(table)]

    #: what :meth:`noise_vectors` reads, for the noise table
    noise_basis: ClassVar[str] = "subject tokens (each subject tokenized alone)"

    def bad_words(self) -> list[list[int]] | None:
        """``bad_words_ids`` for greedy text answers: a speech family's speech and marker tokens."""
        return self.family.text_bad_words() if self.family is not None else None

    def label_known(self, model, records: pd.DataFrame, max_new_tokens: int, batch_size: int) -> pd.DataFrame:
        """Known-t2t: every validated record labelled exact / partial / none by greedy decoding. Every row
        has ``status`` ``ok`` (a T→T prompt always exists), as S→T tables have."""
        cols = ["known_id", "subject", "attribute", "prompt"]
        recs = [KnownRecord(**r) for r in records[cols].to_dict("records")]
        table = filter_known(model, self.tokenizer, recs, lambda r: self.encode(r.prompt).input_ids,
                             max_new_tokens, batch_size, bad_words_ids=self.bad_words())
        return table.assign(status="ok", stage="")

    def token_labels(self, input_ids: Sequence[int], tokens: Sequence[str]) -> list[str]:
        """Display strings of a traced prompt's tokens: a speech family names its speech tokens (SpiritLM's units)."""
        return self.family.token_labels(input_ids, tokens) if self.family is not None else list(tokens)

    def noise(self, tracer: Tracer, record: dict, span: tuple[int, int]):
        """The unscaled noise ε for ``span``, or None for the tracer's own seeded draw (the whole span)."""
        return None

    def trace(self, tracer: Tracer, record: dict) -> PromptTrace:
        """Trace one record: its input and span (with the input embeddings a continuous family gives), and the
        attribute tokens where the answer mode reads them."""
        inp, span = self.lm_input(record)
        attribute = None if tracer.settings.answer == "top1" else self.answer_ids(record)
        tr = tracer.trace_ids(int(record["known_id"]), inp.input_ids, span, noise=self.noise(tracer, record, span),
                              attribute_ids=attribute, inputs_embeds=self.inputs_embeds(inp))
        tr.tokens = self.token_labels(tr.input_ids, tr.tokens)
        tr.prompt, tr.subject, tr.attribute = record.get("prompt"), record.get("subject"), record.get("attribute")
        return tr

    def prompt_table(self, records: pd.DataFrame, aligner: str | None = None) -> pd.DataFrame:
        """The table the Known filter decodes and the tracer reads: for T→T, the validated records themselves."""
        return records

    @classmethod
    def token_rows(cls, ie: pd.DataFrame, known: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
        """Merged IE → (the rows the token categories are taken over, prompts quarantined on the way, what
        ``summary.json`` adds). T→T traced its own tokens: the rows are the traced positions."""
        return ie, pd.DataFrame(columns=QUARANTINE_COLUMNS), {}


@dataclass(frozen=True)
class S2T(T2T):
    """Speech → text, for any speech family: the family's template around the audio (SpiritLM
    ``[BOS] (▁) [Speech] units… [Text]``; Qwen2-Audio ``<|audio_bos|> audio… <|audio_eos|>``) from a row of the
    S→T known table (:func:`crosstrace.speech.prompts.prompt_table`); the subject span is the audio positions of
    the subject's text tokens."""

    name: ClassVar[str] = "s2t"

    def __post_init__(self):
        if self.family is None:
            raise ConfigError(f"config: model {self.spec.name!r}: s2t needs a speech family, not {self.spec.family!r}")

    def lm_input(self, record: dict) -> tuple[LMInput, tuple[int, int]]:
        """The family's S→T input of a known-table row (:func:`crosstrace.speech.prompts.row_input`) and the
        subject span, checked against the row's (a table built with other prompt settings is refused)."""
        inp = s2t_prompts.row_input(record, self.family)
        return inp, s2t_prompts.row_span(record, inp.audio.offset)

    def prompt(self, record: dict) -> tuple[list[int], tuple[int, int]]:
        inp, span = self.lm_input(record)
        return inp.input_ids, span

    def subject_positions(self, record: dict) -> list[int]:
        """The subject's audio positions (:func:`crosstrace.speech.prompts.audio_subject_positions`)."""
        return s2t_prompts.audio_subject_positions(record, int(record["unit_offset"]))

    def noise(self, tracer: Tracer, record: dict, span: tuple[int, int]):
        """Only the subject's audio positions are corrupted (:meth:`subject_positions`): the tracer's seeded
        draw for the span, with the rows of pause positions between subject words set to zero
        (``speech.pause_owner: none``); None (the plain draw) when every position of the span is the subject's."""
        b, e = span
        keep = [p - b for p in self.subject_positions(record)]
        if len(keep) == e - b:
            return None
        cfg = tracer.settings.noise
        eps = draw_noise(cfg.seed, int(record["known_id"]), cfg.samples, e - b, tracer.hidden_size, cfg.kind)
        mask = torch.zeros(e - b, 1)
        mask[keep] = 1.0
        return eps * mask

    noise_basis: ClassVar[str] = "input embeddings at the subject's audio positions (S→T subject spans)"

    def noise_vectors(self, table: pd.DataFrame) -> list[torch.Tensor]:
        """The input embeddings at the subject's audio positions of every ``ok`` row
        (:func:`~crosstrace.models.speech_family.input_embeddings`: SpiritLM's unit embedding rows, Qwen2-Audio's
        projected audio frames)."""
        out = []
        for r in table[table["status"] == "ok"].to_dict("records"):
            inp, _ = self.lm_input(r)
            out.append(input_embeddings(self.family, inp)[self.subject_positions(r)])
        return out

    def prompt_table(self, records: pd.DataFrame, speech_records: pd.DataFrame, manifest: pd.DataFrame,
                     qc: pd.DataFrame | None, alignment: pd.DataFrame, units: pd.DataFrame, aligner: str,
                     token_rows: str = "spoken", pause_owner: str = "none") -> pd.DataFrame:
        """The S→T prompt table of every validated record (quarantined rows keep their stage and reason), from
        the speech chain's tables; ``units`` is the family's speech input step (SpiritLM: units; Qwen2-Audio:
        audio positions); ``aligner`` (``speech.align.use``) is the aligner whose spans it uses,
        ``token_rows`` / ``pause_owner`` are ``speech.token_rows`` / ``speech.pause_owner``."""
        return s2t_prompts.prompt_table(records, speech_records, manifest, qc, alignment, units, aligner,
                                        self.family, token_rows=token_rows, pause_owner=pause_owner)

    @classmethod
    def token_rows(cls, ie: pd.DataFrame, known: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
        """Per-position IE → per-text-token IE with the template tokens after the audio as the last rows
        (paper §2.4; :func:`~crosstrace.trace.tables.aggregate_by_text_tokens` over the text-token maps of
        ``known``, the S→T known table); a prompt whose map does not fit its trace is quarantined.
        ``summary.json`` gets the row settings and the silent and pause positions that belong to no text token."""
        rows, quarantined = aggregate_by_text_tokens(ie, s2t_prompts.token_maps(known))
        ok = known[known["known_id"].isin(rows["known_id"].unique())]  # the traced prompts
        tails = sorted({" ".join(map(str, t)) for t in ok["tail_tokens"] if t is not None and len(t)}) \
            if "tail_tokens" in ok else []
        extras = {
            "aggregation": "IE per text token = mean IE of its audio positions (speech units or audio frames); "
                           f"then the template tokens after the audio, one row each, the last the last token "
                           f"({' | '.join(tails) or '[Text]'})",
            # speech.token_rows / speech.pause_owner the known table was built with
            **{k: str(known[k].dropna().iloc[0]) if known[k].notna().any() else None
               for k in ("token_rows", "pause_owner")},
            "lead_silence_units": int(ok["lead_silence_units"].sum()),
            "trail_silence_units": int(ok["trail_silence_units"].sum()),
            "pause_units": int(ok["pause_units"].sum()),
            "units_in_prompts": int(ok["n_units"].sum()) if len(ok) else 0,
        }
        return rows, quarantined, extras

    def label_known(self, model, table: pd.DataFrame, max_new_tokens: int, batch_size: int) -> pd.DataFrame:
        """Known-s2t: the S→T prompt table with the greedy-decoding labels of its ``ok`` rows, decoded from the
        ids (SpiritLM) or from the input embeddings (Qwen2-Audio: the audio frames are no token rows).

        Quarantined rows are not decoded: they keep their stage and reason and get label ``quarantined``
        (not known), so the table still has one row per validated record.
        """
        ok = table[table["status"] == "ok"]
        by_id = {int(r["known_id"]): r for r in ok.to_dict("records")}
        cols = ["known_id", "subject", "attribute", "prompt"]
        records = [KnownRecord(**{c: r[c] for c in cols}) for r in ok.to_dict("records")]

        def encode(r: KnownRecord):
            inp, _ = self.lm_input(by_id[r.known_id])
            x = self.inputs_embeds(inp)
            return inp.input_ids if x is None else x

        if records:
            labels = filter_known(model, self.tokenizer, records, encode, max_new_tokens, batch_size,
                                  bad_words_ids=self.bad_words())
        else:
            labels = pd.DataFrame(columns=FILTER_COLUMNS)
        lab = labels.set_index("known_id")
        out = table.copy()
        for c in ["n_tokens", "continuation", "first_token_id", "first_token", "label", "known", "margin", "near_tie",
                  "decided"]:
            out[c] = out["known_id"].map(lab[c])
        is_ok = out["status"] == "ok"
        out.loc[is_ok, "reason"] = out.loc[is_ok, "known_id"].map(lab["reason"])
        # object first: with no row decoded the mapped columns are all-NaN floats
        out["label"] = out["label"].astype(object).fillna("quarantined")
        out["known"] = out["known"].astype(object).fillna(False).astype(bool)
        return out[FILTER_COLUMNS + [c for c in out.columns if c not in FILTER_COLUMNS]]


MODALITY_CLASSES = {"t2t": T2T, "s2t": S2T}


def modality_class(modality: str) -> type[T2T]:
    """The class of a modality name (``t2t``, ``s2t``): what steps without a model (merge) call."""
    if modality not in MODALITY_CLASSES:
        raise ConfigError(f"config: unknown modality {modality!r} (choose from {list(MODALITY_CLASSES)})")
    return MODALITY_CLASSES[modality]


def noise_std(mod: T2T | S2T, table: pd.DataFrame) -> dict:
    """ν's basis for a run: the std of the input embeddings of ``mod.noise_vectors(table)`` (``table``: the
    validated records for T→T, the S→T known table for S→T), with what it was computed over. The noise
    scale is then ``trace.noise.multiple`` × this std (:class:`crosstrace.trace.noise.NoiseConfig`)."""
    vectors = mod.noise_vectors(table)
    std = vectors_std(vectors)
    return {"model": mod.spec.name, "modality": mod.name, "std": std, "n_subjects": len(vectors),
            "n_tokens": sum(int(v.shape[0]) for v in vectors), "basis": mod.noise_basis}


def for_run(spec: ModelSpec | dict, modality: str, lm) -> T2T | S2T:
    """The modality object of a model entry (a :class:`ModelSpec` or its dict, e.g. the prepared model JSON)
    and its loaded model (:func:`crosstrace.models.family.load`). A tokenizer alone also works where the
    family builds its prompts from one (``hf``, SpiritLM: ids and spans without weights)."""
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec.from_dict(spec)
    if not isinstance(lm, LoadedModel):  # a tokenizer
        lm = (speech_family(spec.family).with_tokenizer(spec, lm) if spec.speech
              else LoadedModel(spec.name, None, lm, torch.device("cpu"), torch.float32))
    return modality_class(modality)(spec, lm)


__all__ = ["MODALITY_CLASSES", "S2T", "T2T", "for_run", "modality_class", "noise_std"]
