"""The S→T prompt table: one row per record with its units, the units of every text token and the subject's.

Built from the speech chain's tables (selection, synthesis manifest, Whisper QC, alignment, units); a record
that cannot become an S→T prompt stays as a quarantined row with its stage and reason, never a silent drop.
Every text token of the prompt gets a time range from the aligner and, through paper eq. 2 and the
deduplication run lengths, a range of units (docs/method.md, "S→T: text tokens and units"); the subject's
units are the units of its text tokens, the one definition Known-s2t, the noise scale, tracing, aggregation
and the similarity rule read (through :class:`crosstrace.modality.S2T`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..models import spiritlm as slm
from ..spans import SpanError
from ..trace.tables import TextTokenMap
from .align import TokenTimingError, token_times
from .pipeline import prompt_words_from_json
from .units import (
    FRAME_RATE,
    TokenUnitsError,
    UnitSpan,
    UnitSpanError,
    token_unit_ranges,
    unit_offset,
    unit_span_positions,
)

#: extra columns of the S→T known table (on top of crosstrace.filtering.FILTER_COLUMNS)
S2T_COLUMNS = [
    "status", "stage", "wav_path", "duration_s", "passes_qc", "wer", "aligner", "aligner_subject_start_s",
    "aligner_subject_end_s", "subject_start_s", "subject_end_s", "n_frames", "n_units", "frame_start",
    "frame_end", "dedup_start", "dedup_end", "unit_offset", "pos_start", "pos_end", "dedup", "run_lengths",
    "text_ids", "text_tokens", "subject_token_start", "subject_token_end", "token_start_s", "token_end_s",
    "token_unit_start", "token_unit_end", "lead_silence_units", "trail_silence_units",
]



def encode_s2t(dedup: Sequence[int], run_lengths: Sequence[int], t_start: float, t_end: float,
               n_frames: int | None = None, stray_space: bool = slm.STRAY_SPACE_DEFAULT) -> tuple[list[int], UnitSpan]:
    """S→T prompt ids from the deduplicated units and the :class:`UnitSpan` of ``[t_start, t_end)`` s (eq. 2)."""
    ids = slm.s2t_ids(dedup, stray_space=stray_space)
    span = unit_span_positions(t_start, t_end, list(run_lengths), ids, n_frames)
    return ids, span


def row_ids(row: dict, stray_space: bool = slm.STRAY_SPACE_DEFAULT) -> list[int]:
    return slm.s2t_ids([int(u) for u in row["dedup"]], stray_space=stray_space)


def row_prompt(r: dict, stray_space: bool = slm.STRAY_SPACE_DEFAULT) -> tuple[list[int], tuple[int, int]]:
    """S→T ids and subject positions [b, e) of a known-table row: the units of its subject's text tokens.

    Raises :class:`SpanError` for a quarantined row, or when the positions recomputed from the units differ
    from the row's ``pos_start`` / ``pos_end`` (the table was built with other settings, e.g. ``stray_space``).
    """
    if r.get("status", "ok") != "ok":
        raise SpanError(r.get("reason") or "no S→T prompt")
    ids = row_ids(r, stray_space)
    off = unit_offset(ids)
    sb, se = int(r["subject_token_start"]), int(r["subject_token_end"])
    b, e = off + int(r["token_unit_start"][sb]), off + int(r["token_unit_end"][se - 1])
    if (b, e) != (int(r["pos_start"]), int(r["pos_end"])):
        raise SpanError(f"recomputed span {(b, e)} differs from the known table's ({r['pos_start']}, {r['pos_end']}) "
                        "(was the table built with another stray_space?)")
    return ids, (b, e)


def token_map(r: dict) -> TextTokenMap:
    """The text tokens of an ``ok`` known-table row as LM position ranges of their units (for aggregation).

    Positions use the row's ``unit_offset``: the prompt is ``unit_offset`` tokens, ``n_units`` units, ``[Text]``.
    """
    off, n = int(r["unit_offset"]), int(r["n_units"])
    ranges = [(off + int(a), off + int(b)) for a, b in zip(r["token_unit_start"], r["token_unit_end"], strict=True)]
    return TextTokenMap(int(r["known_id"]), [str(t) for t in r["text_tokens"]], ranges,
                        (int(r["subject_token_start"]), int(r["subject_token_end"])), off + n, off + n + 1, off)


def token_maps(known: pd.DataFrame) -> dict[int, TextTokenMap]:
    """:func:`token_map` of every ``ok`` row of an S→T known table, by known_id."""
    return {int(r["known_id"]): token_map(r) for r in known[known["status"] == "ok"].to_dict("records")}


def subject_unit_ids(rows: Sequence[dict], stray_space: bool = slm.STRAY_SPACE_DEFAULT) -> list[list[int]]:
    """For every S→T prompt with a subject span: the unit token ids at positions [pos_start, pos_end)."""
    out = []
    for r in rows:
        if r.get("status", "ok") != "ok":
            continue
        ids, (b, e) = row_prompt(r, stray_space)
        out.append(ids[b:e])
    return out


@dataclass(frozen=True)
class TextTokens:
    """The text tokens of a prompt as the model's tokenizer writes it (T→T), and the subject among them."""

    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]  # character span of each token in the prompt
    subject: tuple[int, int]  # text-token indices [b, e)


def prompt_text_tokens(tokenizer, prompt: str, subject: str, stray_space: bool = slm.STRAY_SPACE_DEFAULT) -> TextTokens:
    """The prompt's text tokens: exactly those of its SpiritLM T→T prompt after the ``[Text]`` marker, so
    that T→T and S→T aggregate over the same tokens."""
    enc = slm.t2t_encode(tokenizer, prompt, subject, stray_space=stray_space)
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


def prompt_table(records: pd.DataFrame, speech_records: pd.DataFrame, manifest: pd.DataFrame, qc: pd.DataFrame | None,
              alignment: pd.DataFrame, units: pd.DataFrame, aligner: str, tokenizer,
              stray_space: bool = slm.STRAY_SPACE_DEFAULT) -> pd.DataFrame:
    """One row per validated record with everything needed to build, trace and aggregate its S→T prompt.

    ``status`` is ``ok`` or ``quarantined`` (``stage`` says where: speech, synthesize or recordings, align, units,
    tokens, span; ``reason`` why). QC failures (``passes_qc`` False) stay ``ok`` but labelled. ``tokenizer``
    is the SpiritLM tokenizer (the text tokens of each prompt), ``stray_space`` the entry's prompt layout.
    """
    stray = stray_space
    selected = set(speech_records["known_id"].astype(int))
    align = alignment[alignment["aligner"] == aligner] if len(alignment) else alignment
    rows = []
    for r in records.to_dict("records"):
        kid = int(r["known_id"])
        row = {"known_id": kid, "subject": r["subject"], "attribute": r["attribute"], "prompt": r["prompt"],
               "status": "ok", "stage": "", "reason": "", "aligner": aligner}

        def bad(stage, reason, row=row, kid=kid):  # an upstream reason already names the record: once is enough
            row.update(status="quarantined", stage=stage, reason=f"known_id={kid}: {reason.removeprefix(f'known_id={kid}: ')}")

        rows.append(row)
        if kid not in selected:
            bad("speech", "not selected for speech (speech.max_prompts)")
            continue
        m = _first(manifest, kid)
        if m is None or m.get("status") != "ok":
            # the stage is the rule that made (or refused) the audio: TTS, or the user's recordings
            own = (m or {}).get("backend") == "recordings"
            bad("recordings" if own else "synthesize", (m or {}).get("reason") or "no audio in the speech manifest")
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
            text = prompt_text_tokens(tokenizer, r["prompt"], r["subject"], stray)
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
