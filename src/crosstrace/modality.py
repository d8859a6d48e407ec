"""Model families (hf, spiritlm) and modalities (T→T, S→T): loading, prompt ids, subject spans.

The workflow scripts stay thin; everything that depends on the family or modality lives here.

- ``load_any(spec)``: one loader for a model entry of the config (``family: hf | spiritlm``).
- ``encode_t2t``: T→T ids and subject span (HF: the tokenizer's own prompt; SpiritLM: ``[Text]`` + text).
- ``encode_s2t``: S→T ids ``[1, (▁,) 32001, 32002+u…, 32000]`` and the :class:`UnitSpan` of a time span
  (paper eq. 2, through the deduplication run lengths, offset from the real ids).
- ``s2t_table``: the S→T prompt table (every record; missing speech / QC failure / alignment, text-token
  mapping or unit failure become labelled or quarantined rows with a reason, never a silent drop). It maps
  every text token of the prompt to its units (docs/method.md, "S→T: text tokens and units"); the subject's
  units are the units of its text tokens, the one definition used by Known-s2t, the noise scale, tracing,
  aggregation and the similarity rule.
- ``s2t_token_map``: a known-table row's text tokens as LM position ranges, for aggregating S→T traces.
- ``label_known_t2t`` / ``label_known_s2t``: the Known-t2t / Known-s2t tables (greedy decoding).
- ``s2t_subject_embedding_ids``: the unit ids inside every subject span, for the S→T noise scale.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .data import KnownRecord
from .filtering import FILTER_COLUMNS, filter_known
from .models import spiritlm as slm
from .models.loading import LoadedModel, ModelLoadError, load_model, prepare_model
from .speech.align import TokenTimingError, token_times
from .speech.pipeline import prompt_words_from_json
from .speech.units import (
    FRAME_RATE,
    TokenUnitsError,
    UnitSpan,
    UnitSpanError,
    token_unit_ranges,
    unit_offset,
    unit_span_positions,
)
from .trace.tables import TextTokenMap
from .trace.tokens import Encoded, SpanError, attribute_token_ids, encode_prompt, encode_text

FAMILIES = ("hf", "spiritlm")
MODALITIES = ("t2t", "s2t")

#: speech tokenizer files under a SpiritLM checkpoint root (docs/spiritlm.md, "Checkpoint layout")
HUBERT_FILES = (
    Path("speech_tokenizer") / "hubert_25hz" / "mhubert_base_25hz.pt",
    Path("speech_tokenizer") / "hubert_25hz" / "L11_quantizer_500.pt",
)

#: extra columns of the S→T known table (on top of crosstrace.filtering.FILTER_COLUMNS)
S2T_COLUMNS = [
    "status", "stage", "wav_path", "duration_s", "passes_qc", "wer", "aligner", "aligner_subject_start_s",
    "aligner_subject_end_s", "subject_start_s", "subject_end_s", "n_frames", "n_units", "frame_start",
    "frame_end", "dedup_start", "dedup_end", "unit_offset", "pos_start", "pos_end", "dedup", "run_lengths",
    "text_ids", "text_tokens", "subject_token_start", "subject_token_end", "token_start_s", "token_end_s",
    "token_unit_start", "token_unit_end", "lead_silence_units", "trail_silence_units",
]


def stray_space(spec: dict) -> bool:
    """Whether a model entry's SpiritLM prompts carry the stray ``▁`` after BOS (default: yes, as the reference)."""
    return bool(spec.get("stray_space", slm.STRAY_SPACE_DEFAULT))


def family(spec: dict) -> str:
    f = spec.get("family", "hf")
    if f not in FAMILIES:
        raise ModelLoadError(f"model {spec.get('name')!r}: family must be one of {FAMILIES}, got {f!r}")
    return f


# ------------------------------------------------------------------------------------------- loading


def check_spiritlm_root(root: str | Path, modalities: Sequence[str] = ("t2t",)) -> Path:
    """The SpiritLM LM folder; with ``s2t`` also the speech tokenizer files. Errors name expected paths."""
    root = Path(root).expanduser()
    if not root.exists():
        raise ModelLoadError(
            f"SpiritLM checkpoint root {root} does not exist; expected {root / slm.LM_SUBDIR} "
            "(the $SPIRITLM_CHECKPOINTS_DIR layout, see docs/paper-run.md)"
        )
    folder = slm.resolve_spiritlm_folder(root)
    if "s2t" in modalities:
        base = root if folder != root else root.parent.parent
        missing = [str(base / f) for f in HUBERT_FILES if not (base / f).is_file()]
        if missing:
            raise ModelLoadError(f"SpiritLM speech tokenizer file(s) missing (needed for s2t): {', '.join(missing)}")
    return folder


def prepare_any(spec: dict, cache_dir: str | Path | None = None) -> str:
    """Resolve a model entry to a loadable path (HF: converted/cached folder or hub id; SpiritLM: LM folder)."""
    if family(spec) == "spiritlm":
        return str(check_spiritlm_root(spec["path"], spec.get("modalities", ["t2t"])))
    return prepare_model(spec["path"], cache_dir)


def load_any(spec: dict) -> LoadedModel:
    """Load a prepared model entry (``spec["resolved"]`` from prepare_model, else ``spec["path"]``)."""
    path = spec.get("resolved", spec["path"])
    device, dtype, name = spec.get("device", "cpu"), spec.get("dtype", "float32"), spec.get("name")
    if family(spec) == "spiritlm":
        lm = slm.load_spiritlm_bundle(path, device, dtype, name=name or "spiritlm")
        if lm.device.type == "cpu":
            from .models.loading import _own_memory

            _own_memory(lm.model)
        return lm
    return load_model(path, device, dtype, name=name)


def speech_root(spec: dict) -> Path:
    """The SpiritLM checkpoint root (holding speech_tokenizer/) of a spiritlm model entry."""
    root = Path(spec["path"]).expanduser()
    if (root / "config.json").exists():  # the LM folder itself was given
        root = root.parent.parent
    return root


# ---------------------------------------------------------------------------------------------- T→T


def encode_t2t(spec: dict, tokenizer, prompt: str, subject: str | None) -> Encoded:
    """T→T ids + subject span for a model entry (SpiritLM: ``[Text]`` + prompt, BOS/marker shift positions)."""
    if family(spec) == "spiritlm":
        return slm.t2t_encode(tokenizer, prompt, subject, stray_space=stray_space(spec))
    if subject is None:
        return encode_text(tokenizer, prompt)
    return encode_prompt(tokenizer, prompt, subject)


def attribute_ids_t2t(spec: dict, tokenizer, prompt: str, attribute: str | None) -> list[int]:
    """The attribute's text tokens after the T→T prompt (:func:`attribute_token_ids`).

    S→T reads the same tokens after ``[Text]``: the answer is text in both modalities, so T→T and S→T
    of one fact measure the same quantity.
    """
    if not attribute or not str(attribute).strip():
        raise SpanError("the record has no attribute to read as the answer")
    return attribute_token_ids(lambda text: encode_t2t(spec, tokenizer, text, None), prompt, str(attribute))


def bad_words(spec: dict, model=None) -> list[list[int]] | None:
    """``bad_words_ids`` for greedy text answers: SpiritLM must not emit markers or units."""
    if family(spec) != "spiritlm":
        return None
    vocab = model.get_input_embeddings().weight.shape[0] if model is not None else 32512
    return slm.text_bad_words(vocab)


# ---------------------------------------------------------------------------------------------- S→T


def encode_s2t(dedup: Sequence[int], run_lengths: Sequence[int], t_start: float, t_end: float,
               n_frames: int | None = None, stray_space: bool = slm.STRAY_SPACE_DEFAULT) -> tuple[list[int], UnitSpan]:
    """S→T prompt ids from the deduplicated units and the :class:`UnitSpan` of ``[t_start, t_end)`` s (eq. 2)."""
    ids = slm.s2t_ids(dedup, stray_space=stray_space)
    span = unit_span_positions(t_start, t_end, list(run_lengths), ids, n_frames)
    return ids, span


def s2t_row_ids(row: dict, stray_space: bool = slm.STRAY_SPACE_DEFAULT) -> list[int]:
    return slm.s2t_ids([int(u) for u in row["dedup"]], stray_space=stray_space)


def s2t_row_prompt(r: dict, stray_space: bool = slm.STRAY_SPACE_DEFAULT) -> tuple[list[int], tuple[int, int]]:
    """S→T ids and subject positions [b, e) of a known-table row: the units of its subject's text tokens.

    Raises :class:`SpanError` for a quarantined row, or when the positions recomputed from the units differ
    from the row's ``pos_start`` / ``pos_end`` (the table was built with other settings, e.g. ``stray_space``).
    """
    if r.get("status", "ok") != "ok":
        raise SpanError(r.get("reason") or "no S→T prompt")
    ids = s2t_row_ids(r, stray_space)
    off = unit_offset(ids)
    sb, se = int(r["subject_token_start"]), int(r["subject_token_end"])
    b, e = off + int(r["token_unit_start"][sb]), off + int(r["token_unit_end"][se - 1])
    if (b, e) != (int(r["pos_start"]), int(r["pos_end"])):
        raise SpanError(f"recomputed span {(b, e)} differs from the known table's ({r['pos_start']}, {r['pos_end']}) "
                        "(was the table built with another stray_space?)")
    return ids, (b, e)


def s2t_token_map(r: dict) -> TextTokenMap:
    """The text tokens of an ``ok`` known-table row as LM position ranges of their units (for aggregation).

    Positions use the row's ``unit_offset``: the prompt is ``unit_offset`` tokens, ``n_units`` units, ``[Text]``.
    """
    off, n = int(r["unit_offset"]), int(r["n_units"])
    ranges = [(off + int(a), off + int(b)) for a, b in zip(r["token_unit_start"], r["token_unit_end"], strict=True)]
    return TextTokenMap(int(r["known_id"]), [str(t) for t in r["text_tokens"]], ranges,
                        (int(r["subject_token_start"]), int(r["subject_token_end"])), off + n, off + n + 1, off)


def s2t_token_maps(known: pd.DataFrame) -> dict[int, TextTokenMap]:
    """:func:`s2t_token_map` of every ``ok`` row of an S→T known table, by known_id."""
    return {int(r["known_id"]): s2t_token_map(r) for r in known[known["status"] == "ok"].to_dict("records")}


def s2t_subject_embedding_ids(rows: Sequence[dict], stray_space: bool = slm.STRAY_SPACE_DEFAULT) -> list[list[int]]:
    """For every S→T prompt with a subject span: the unit token ids at positions [pos_start, pos_end)."""
    out = []
    for r in rows:
        if r.get("status", "ok") != "ok":
            continue
        ids, (b, e) = s2t_row_prompt(r, stray_space)
        out.append(ids[b:e])
    return out


@dataclass(frozen=True)
class TextTokens:
    """The text tokens of a prompt as the model's tokenizer writes it (T→T), and the subject among them."""

    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]  # character span of each token in the prompt
    subject: tuple[int, int]  # text-token indices [b, e)


def prompt_text_tokens(spec: dict, tokenizer, prompt: str, subject: str) -> TextTokens:
    """The prompt's text tokens: exactly those of its T→T prompt after the ``[Text]`` marker, so that T→T
    and S→T aggregate over the same tokens (SpiritLM only)."""
    enc = encode_t2t(spec, tokenizer, prompt, subject)
    head = enc.input_ids.index(slm.TEXT_ID) + 1
    ids = enc.input_ids[head:]
    toks = [str(t) for t in tokenizer.convert_ids_to_tokens(ids)]
    b, e = enc.subject_span
    return TextTokens(ids, toks, [tuple(o) for o in enc.offsets[head:]], (b - head, e - head))


def map_text_tokens(text: TextTokens, prompt: str, prompt_words_json: str | None, run_lengths: Sequence[int]) -> dict:
    """Time ranges and units of every text token, and the subject's units (known-table columns).

    Raises :class:`TokenTimingError` (a word the aligner could not place) or :class:`UnitSpanError` (a text
    token that owns no unit; "units do not cover the subject" when it is a subject token).
    """
    words = prompt_words_from_json(prompt_words_json)
    if not words:
        raise TokenTimingError("the alignment has no word timings (re-run the align rule)")
    starts, ends = token_times(prompt, text.offsets, words)
    try:
        tu = token_unit_ranges(starts, ends, run_lengths, names=text.tokens)
    except TokenUnitsError as e:
        if text.subject[0] <= e.token < text.subject[1]:
            raise UnitSpanError(f"the units do not cover the subject: {e}") from None
        raise
    sb, se = text.subject
    t0, t1 = starts[sb], ends[se - 1]
    f_a = math.floor(round(t0 * FRAME_RATE, 9))
    f_end = math.ceil(round(t1 * FRAME_RATE, 9))
    return {
        "text_ids": text.ids, "text_tokens": text.tokens, "subject_token_start": sb, "subject_token_end": se,
        "token_start_s": [round(x, 6) for x in starts], "token_end_s": [round(x, 6) for x in ends],
        "token_unit_start": tu.unit_start, "token_unit_end": tu.unit_end,
        "lead_silence_units": tu.lead, "trail_silence_units": tu.trail,
        "subject_start_s": t0, "subject_end_s": t1, "frame_start": f_a, "frame_end": f_end,
        "dedup_start": tu.unit_start[sb], "dedup_end": tu.unit_end[se - 1],
    }


def unit_token(i: int) -> str | None:
    """``[Hu123]`` for unit ids, ``[Text]``/``[Speech]`` for markers, else None."""
    if slm.HU0_ID <= i <= slm.HU_LAST_ID:
        return f"[Hu{i - slm.HU0_ID}]"
    return {slm.TEXT_ID: slm.TEXT_MARKER, slm.SPEECH_ID: slm.SPEECH_MARKER}.get(i)


def _first(df: pd.DataFrame | None, known_id: int) -> dict | None:
    if df is None or df.empty:
        return None
    hit = df[df["known_id"] == known_id]
    return None if hit.empty else hit.iloc[0].to_dict()


def s2t_table(records: pd.DataFrame, speech_records: pd.DataFrame, manifest: pd.DataFrame, qc: pd.DataFrame | None,
              alignment: pd.DataFrame, units: pd.DataFrame, aligner: str, spec: dict, tokenizer) -> pd.DataFrame:
    """One row per validated record with everything needed to build, trace and aggregate its S→T prompt.

    ``status`` is ``ok`` or ``quarantined`` (``stage`` says where: speech, synthesize, align, units,
    tokens, span; ``reason`` why). QC failures (``passes_qc`` False) stay ``ok`` but labelled. ``spec`` is the
    model entry (``stray_space``), ``tokenizer`` its tokenizer (the text tokens of each prompt).
    """
    stray = stray_space(spec)
    selected = set(speech_records["known_id"].astype(int))
    align = alignment[alignment["aligner"] == aligner] if len(alignment) else alignment
    rows = []
    for r in records.to_dict("records"):
        kid = int(r["known_id"])
        row = {"known_id": kid, "subject": r["subject"], "attribute": r["attribute"], "prompt": r["prompt"],
               "status": "ok", "stage": "", "reason": "", "aligner": aligner}

        def bad(stage, reason, row=row, kid=kid):
            row.update(status="quarantined", stage=stage, reason=f"known_id={kid}: {reason}")

        rows.append(row)
        if kid not in selected:
            bad("speech", "not selected for speech (speech.max_prompts)")
            continue
        m = _first(manifest, kid)
        if m is None or m.get("status") != "ok":
            bad("synthesize", (m or {}).get("reason") or "no synthesised audio")
            continue
        row.update(wav_path=m["path"], duration_s=float(m["duration_s"]))
        q = _first(qc, kid)
        if q is not None:
            row.update(passes_qc=bool(q["passes_qc"]), wer=float(q["wer"]) if q.get("wer") is not None else np.nan)
        a = _first(align, kid)
        if a is None or a.get("status") != "ok":
            bad("align", (a or {}).get("reason") or f"no {aligner} alignment")
            continue
        row.update(aligner_subject_start_s=float(a["subject_start_s"]), aligner_subject_end_s=float(a["subject_end_s"]))
        u = _first(units, kid)
        if u is None or u.get("status") != "ok":
            bad("units", (u or {}).get("reason") or "no speech units")
            continue
        dedup, runs = [int(x) for x in u["dedup"]], [int(x) for x in u["run_lengths"]]
        row.update(dedup=dedup, run_lengths=runs, n_frames=int(u["n_frames"]), n_units=len(dedup))
        try:
            text = prompt_text_tokens(spec, tokenizer, r["prompt"], r["subject"])
            row.update(map_text_tokens(text, r["prompt"], a.get("prompt_words"), runs))
        except (TokenTimingError, UnitSpanError, SpanError, ValueError) as e:
            bad("tokens", str(e))
            continue
        try:
            off = unit_offset(slm.s2t_ids(dedup, stray_space=stray))
        except (SpanError, ValueError) as e:
            bad("span", str(e))
            continue
        row.update(unit_offset=off, pos_start=off + row["dedup_start"], pos_end=off + row["dedup_end"])
    df = pd.DataFrame(rows)
    for c in S2T_COLUMNS:
        if c not in df:
            df[c] = None
    return df


def label_known_t2t(model, tokenizer, spec: dict, records: pd.DataFrame, max_new_tokens: int,
                    batch_size: int) -> pd.DataFrame:
    """Known-t2t: every validated record labelled exact / partial / none by greedy decoding."""
    cols = ["known_id", "subject", "attribute", "prompt"]
    recs = [KnownRecord(**r) for r in records[cols].to_dict("records")]
    return filter_known(model, tokenizer, recs, lambda r: encode_t2t(spec, tokenizer, r.prompt, None).input_ids,
                        max_new_tokens, batch_size, bad_words_ids=bad_words(spec, model))


def label_known_s2t(model, tokenizer, spec: dict, table: pd.DataFrame, max_new_tokens: int,
                    batch_size: int) -> pd.DataFrame:
    """Known-s2t: the :func:`s2t_table` with the greedy-decoding labels of its ``ok`` rows.

    Quarantined rows are not decoded: they keep their stage and reason and get label ``quarantined``
    (not known), so the table still has one row per validated record.
    """
    stray = stray_space(spec)
    ok = table[table["status"] == "ok"]
    by_id = {int(r["known_id"]): r for r in ok.to_dict("records")}
    cols = ["known_id", "subject", "attribute", "prompt"]
    records = [KnownRecord(**{c: r[c] for c in cols}) for r in ok.to_dict("records")]
    if records:
        labels = filter_known(model, tokenizer, records, lambda r: s2t_row_ids(by_id[r.known_id], stray),
                              max_new_tokens, batch_size, bad_words_ids=bad_words(spec, model))
    else:
        labels = pd.DataFrame(columns=FILTER_COLUMNS)
    lab = labels.set_index("known_id")
    out = table.copy()
    for c in ["n_tokens", "continuation", "first_token_id", "first_token", "label", "known"]:
        out[c] = out["known_id"].map(lab[c])
    is_ok = out["status"] == "ok"
    out.loc[is_ok, "reason"] = out.loc[is_ok, "known_id"].map(lab["reason"])
    out["label"] = out["label"].fillna("quarantined")
    out["known"] = out["known"].fillna(False).astype(bool)
    return out[FILTER_COLUMNS + [c for c in out.columns if c not in FILTER_COLUMNS]]


def units_row(known_id: int, units=None, error: str | None = None) -> dict:
    """A row of ``{model}/s2t/units/{shard}.parquet`` (``units``: a hubert.Units, or None with ``error``)."""
    if units is None:
        return {"known_id": known_id, "units": [], "dedup": [], "run_lengths": [], "n_frames": 0,
                "chunk_frames": "[]", "status": "quarantined", "reason": f"known_id={known_id}: {error}"}
    return {"known_id": known_id, "units": list(units.units), "dedup": list(units.dedup),
            "run_lengths": list(units.run_lengths), "n_frames": int(units.n_frames),
            "chunk_frames": json.dumps(list(units.chunk_frames)), "status": "ok", "reason": ""}


# ------------------------------------------------------------------------------------------- tracing


def trace_one_fn(spec: dict, tracer, modality: str):
    """``record -> PromptTrace`` for :func:`crosstrace.trace.tables.trace_records` (None: the default T→T path)."""
    stray = stray_space(spec)
    spirit = family(spec) == "spiritlm"

    def fix_tokens(tr):
        if spirit:
            tr.tokens = [unit_token(i) or s for i, s in zip(tr.input_ids, tr.tokens, strict=True)]
        return tr

    def attribute(r):  # only the attribute answer modes read it
        if tracer.settings.answer == "top1":
            return None
        return attribute_ids_t2t(spec, tracer.tokenizer, r["prompt"], r.get("attribute"))

    if modality == "s2t":
        if not spirit:
            raise ValueError(f"model {spec.get('name')!r}: s2t needs family spiritlm")

        def one(r):
            ids, span = s2t_row_prompt(r, stray)
            return fix_tokens(tracer.trace_ids(int(r["known_id"]), ids, span, attribute_ids=attribute(r)))

        return one
    if not spirit:
        return None

    def one_t2t(r):
        enc = encode_t2t(spec, tracer.tokenizer, r["prompt"], r["subject"])
        return fix_tokens(tracer.trace_ids(int(r["known_id"]), enc.input_ids, enc.subject_span,
                                           attribute_ids=attribute(r)))

    return one_t2t
