"""The two modalities of the study as objects: how a record becomes a traced prompt.

:class:`T2T` (text prompt → text answer) and :class:`S2T` (speech prompt → text answer) answer the same
questions for one model entry, so no caller asks which family or modality it holds:

- ``prompt(record) -> (ids, span)``: the LM input ids and the subject span ``[b, e)`` in them;
- ``answer_ids(record)``: the attribute's text tokens after the prompt (the attribute answer modes);
- ``noise_ids(table)``: the token ids whose input embeddings set the noise scale ν (its std × multiple);
- ``label_known(model, table, …)``: the Known table (greedy decoding: exact / partial / none);
- ``noise(tracer, record, span)``: which positions of the span are corrupted (S→T: the subject's units only);
- ``trace(tracer, record)``: the :class:`~crosstrace.trace.api.PromptTrace` of a record, through
  :meth:`Tracer.trace_ids <crosstrace.trace.api.Tracer.trace_ids>` for both;
- ``prompt_table(records, aligner=…, **speech_tables)``: the table the Known filter decodes (T→T: the records;
  S→T: one spoken prompt per record, from the speech chain's tables, which the workflow gives only S→T);
- ``token_rows(ie, known)`` (a classmethod: the merge step has no model): the traced positions → the rows the
  token categories are taken over (T→T: its tokens; S→T: its text tokens, each the mean of its units), the
  prompts quarantined on the way, and what the modality adds to ``summary.json``.

:func:`for_run` builds the right one for a model entry and modality, :func:`modality_class` names the class.
A new input modality (a speech family with continuous audio input, say) is a subclass that answers the same
questions.
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
from .models import spiritlm as slm
from .spans import Encoded, SpanError
from .speech import prompts as s2t_prompts
from .trace.api import PromptTrace, Tracer
from .trace.noise import draw_noise, embedding_std
from .trace.tables import QUARANTINE_COLUMNS, aggregate_by_text_tokens
from .trace.tokens import attribute_token_ids, encode_prompt, encode_text, subject_token_ids


@dataclass(frozen=True)
class T2T:
    """Text → text: the prompt as the model's tokenizer writes it (SpiritLM: ``[Text]`` first)."""

    spec: ModelSpec
    tokenizer: Any
    name: ClassVar[str] = "t2t"

    @property
    def stray_space(self) -> bool:
        """SpiritLM prompts keep the ``▁`` after BOS unless the entry says otherwise (docs/spiritlm.md)."""
        return slm.STRAY_SPACE_DEFAULT if self.spec.stray_space is None else self.spec.stray_space

    def encode(self, prompt: str, subject: str | None = None) -> Encoded:
        """Ids, offsets and the subject span of a T→T prompt (no subject: span (0, 0))."""
        if self.spec.spiritlm:
            return slm.t2t_encode(self.tokenizer, prompt, subject, stray_space=self.stray_space)
        if subject is None:
            return encode_text(self.tokenizer, prompt)
        return encode_prompt(self.tokenizer, prompt, subject)

    def prompt(self, record: dict) -> tuple[list[int], tuple[int, int]]:
        enc = self.encode(record["prompt"], record["subject"])
        return enc.input_ids, enc.subject_span

    def answer_ids(self, record: dict) -> list[int]:
        """The attribute's text tokens as they follow the T→T prompt (:func:`attribute_token_ids`). S→T reads
        the same tokens after ``[Text]``: the answer is text in both modalities, the same quantity."""
        attribute = record.get("attribute")
        if not attribute or not str(attribute).strip():
            raise SpanError("the record has no attribute to read as the answer")
        return attribute_token_ids(lambda text: self.encode(text), record["prompt"], str(attribute))

    def noise_ids(self, table: pd.DataFrame) -> list[list[int]]:
        """ROME's s3 basis: every dataset subject tokenized alone (:func:`subject_token_ids`)."""
        return subject_token_ids(self.tokenizer, table["subject"].tolist())

    #: what :meth:`noise_ids` reads, for the noise table
    noise_basis: ClassVar[str] = "subject tokens (each subject tokenized alone)"

    def bad_words(self, model) -> list[list[int]] | None:
        """``bad_words_ids`` for greedy text answers: SpiritLM must not emit markers or units."""
        if not self.spec.spiritlm:
            return None
        return slm.text_bad_words(model.get_input_embeddings().weight.shape[0])

    def label_known(self, model, records: pd.DataFrame, max_new_tokens: int, batch_size: int) -> pd.DataFrame:
        """Known-t2t: every validated record labelled exact / partial / none by greedy decoding. Every row
        has ``status`` ``ok`` (a T→T prompt always exists), as S→T tables have."""
        cols = ["known_id", "subject", "attribute", "prompt"]
        recs = [KnownRecord(**r) for r in records[cols].to_dict("records")]
        table = filter_known(model, self.tokenizer, recs, lambda r: self.encode(r.prompt).input_ids,
                             max_new_tokens, batch_size, bad_words_ids=self.bad_words(model))
        return table.assign(status="ok", stage="")

    def token_labels(self, input_ids: Sequence[int], tokens: Sequence[str]) -> list[str]:
        """Display strings of a traced prompt's tokens: SpiritLM's markers and units by name."""
        if not self.spec.spiritlm:
            return list(tokens)
        return [s2t_prompts.unit_token(int(i)) or s for i, s in zip(input_ids, tokens, strict=True)]

    def noise(self, tracer: Tracer, record: dict, span: tuple[int, int]):
        """The unscaled noise ε for ``span``, or None for the tracer's own seeded draw (the whole span)."""
        return None

    def trace(self, tracer: Tracer, record: dict) -> PromptTrace:
        """Trace one record: its prompt ids and span, and the attribute tokens where the answer mode reads them."""
        ids, span = self.prompt(record)
        attribute = None if tracer.settings.answer == "top1" else self.answer_ids(record)
        tr = tracer.trace_ids(int(record["known_id"]), ids, span, noise=self.noise(tracer, record, span),
                              attribute_ids=attribute)
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
    """Speech → text (SpiritLM only): ``[BOS] (▁) [Speech] units… [Text]`` from a row of the S→T known table
    (:func:`crosstrace.speech.prompts.prompt_table`); the subject span is the units of the subject's text tokens."""

    name: ClassVar[str] = "s2t"

    def __post_init__(self):
        if not self.spec.spiritlm:
            raise ConfigError(f"config: model {self.spec.name!r}: s2t needs family spiritlm")

    def prompt(self, record: dict) -> tuple[list[int], tuple[int, int]]:
        return s2t_prompts.row_prompt(record, self.stray_space)

    def noise(self, tracer: Tracer, record: dict, span: tuple[int, int]):
        """Only the subject's units are corrupted (:func:`crosstrace.speech.prompts.subject_positions`): the
        tracer's seeded draw for the span, with the rows of pause units between subject words set to zero
        (``speech.pause_owner: none``); None (the plain draw) when every unit of the span is the subject's."""
        b, e = span
        keep = [p - b for p in s2t_prompts.subject_positions(record, self.stray_space)]
        if len(keep) == e - b:
            return None
        cfg = tracer.settings.noise
        eps = draw_noise(cfg.seed, int(record["known_id"]), cfg.samples, e - b, tracer.hidden_size, cfg.kind)
        mask = torch.zeros(e - b, 1)
        mask[keep] = 1.0
        return eps * mask

    noise_basis: ClassVar[str] = "units of the subject's text tokens (S→T subject spans)"

    def noise_ids(self, table: pd.DataFrame) -> list[list[int]]:
        """The unit tokens inside every S→T subject span (quarantined rows have none)."""
        return s2t_prompts.subject_unit_ids(table.to_dict("records"), self.stray_space)

    def prompt_table(self, records: pd.DataFrame, speech_records: pd.DataFrame, manifest: pd.DataFrame,
                     qc: pd.DataFrame | None, alignment: pd.DataFrame, units: pd.DataFrame, aligner: str,
                     token_rows: str = "spoken", pause_owner: str = "none") -> pd.DataFrame:
        """The S→T prompt table of every validated record (quarantined rows keep their stage and reason), from
        the speech chain's tables; ``aligner`` (``speech.align.use``) is the aligner whose spans it uses,
        ``token_rows`` / ``pause_owner`` are ``speech.token_rows`` / ``speech.pause_owner``."""
        return s2t_prompts.prompt_table(records, speech_records, manifest, qc, alignment, units, aligner,
                                        self.tokenizer, self.stray_space, token_rows, pause_owner)

    @classmethod
    def token_rows(cls, ie: pd.DataFrame, known: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
        """Per-unit IE → per-text-token IE with ``[Text]`` as the last row (paper §2.4;
        :func:`~crosstrace.trace.tables.aggregate_by_text_tokens` over the text-token maps of ``known``, the
        S→T known table); a prompt whose map does not fit its trace is quarantined. ``summary.json`` gets the
        row settings and the silent and pause units that belong to no text token."""
        rows, quarantined = aggregate_by_text_tokens(ie, s2t_prompts.token_maps(known))
        ok = known[known["known_id"].isin(rows["known_id"].unique())]  # the traced prompts
        extras = {
            "aggregation": "IE per text token = mean IE of its speech units; last token = [Text]",
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
        """Known-s2t: the S→T prompt table with the greedy-decoding labels of its ``ok`` rows.

        Quarantined rows are not decoded: they keep their stage and reason and get label ``quarantined``
        (not known), so the table still has one row per validated record.
        """
        ok = table[table["status"] == "ok"]
        by_id = {int(r["known_id"]): r for r in ok.to_dict("records")}
        cols = ["known_id", "subject", "attribute", "prompt"]
        records = [KnownRecord(**{c: r[c] for c in cols}) for r in ok.to_dict("records")]
        if records:
            labels = filter_known(model, self.tokenizer, records,
                                  lambda r: s2t_prompts.row_ids(by_id[r.known_id], self.stray_space),
                                  max_new_tokens, batch_size, bad_words_ids=self.bad_words(model))
        else:
            labels = pd.DataFrame(columns=FILTER_COLUMNS)
        lab = labels.set_index("known_id")
        out = table.copy()
        for c in ["n_tokens", "continuation", "first_token_id", "first_token", "label", "known", "margin", "near_tie",
                  "decided"]:
            out[c] = out["known_id"].map(lab[c])
        is_ok = out["status"] == "ok"
        out.loc[is_ok, "reason"] = out.loc[is_ok, "known_id"].map(lab["reason"])
        out["label"] = out["label"].fillna("quarantined")
        out["known"] = out["known"].fillna(False).astype(bool)
        return out[FILTER_COLUMNS + [c for c in out.columns if c not in FILTER_COLUMNS]]


MODALITY_CLASSES = {"t2t": T2T, "s2t": S2T}


def modality_class(modality: str) -> type[T2T]:
    """The class of a modality name (``t2t``, ``s2t``): what steps without a model (merge) call."""
    if modality not in MODALITY_CLASSES:
        raise ConfigError(f"config: unknown modality {modality!r} (choose from {list(MODALITY_CLASSES)})")
    return MODALITY_CLASSES[modality]


def noise_std(mod: T2T | S2T, model, table: pd.DataFrame) -> dict:
    """ν's basis for a run: the std of the input embeddings of ``mod.noise_ids(table)`` (``table``: the
    validated records for T→T, the S→T known table for S→T), with what it was computed over. The noise
    scale is then ``trace.noise.multiple`` × this std (:class:`crosstrace.trace.noise.NoiseConfig`)."""
    ids = mod.noise_ids(table)
    std = embedding_std(model.get_input_embeddings(), ids)
    return {"model": mod.spec.name, "modality": mod.name, "std": std, "n_subjects": len(ids),
            "n_tokens": sum(map(len, ids)), "basis": mod.noise_basis}


def for_run(spec: ModelSpec | dict, modality: str, tokenizer) -> T2T | S2T:
    """The modality object of a model entry (a :class:`ModelSpec` or its dict, e.g. the prepared model JSON)."""
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec.from_dict(spec)
    return modality_class(modality)(spec, tokenizer)


__all__ = ["MODALITY_CLASSES", "S2T", "T2T", "for_run", "modality_class", "noise_std"]
