"""The S→T prompt table: one row per record with its units, the units of every text token and the subject's.

Built from the speech chain's tables (selection, synthesis manifest, Whisper QC, alignment, units); a record
that cannot become an S→T prompt stays as a quarantined row with its stage and reason, never a silent drop.
The rows of an S→T trace are text tokens (docs/method.md, "S→T: text tokens and units"): by default the
paper's *spoken text tokens* (the tokens of the prompt's spoken text, digits and symbols written out;
``token_rows="spoken"``), or the prompt's own T→T tokens (``token_rows="prompt"``). Every text token gets a
time range from the aligner and, through paper eq. 2 and the deduplication run lengths, a block of units;
pause units between words belong to no token unless ``pause_owner="preceding"``. The subject's units are the
units of its text tokens (:func:`subject_positions`), the one definition Known-s2t, the noise scale, the
corruption, aggregation and the similarity rule read (through :class:`crosstrace.modality.S2T`).

Family-neutral: the speech family (:mod:`crosstrace.models.speech_family`) builds each S→T input and its
:class:`~crosstrace.models.speech_family.AudioGrid` (SpiritLM: deduplicated units of 25 Hz HuBERT frames;
Qwen2-Audio: one 25 Hz encoder frame per audio position), and writes the text tokens; the table stores the
audio positions of each text token (``token_unit_start`` / ``token_unit_end``, counted from the first audio
position ``unit_offset``) and the template tokens after the audio (``tail_tokens``: SpiritLM ``[Text]``;
Qwen2-Audio ``<|audio_eos|>`` and any text after the prompt slot), each a row of its own, the last one the
last token.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..models import spiritlm as slm
from ..models.speech_family import LMInput, SpeechLM, SpokenPrompt
from ..spans import SpanError, token_span_from_offsets
from ..trace.tables import TextTokenMap
from .align import PAUSE_OWNERS, PromptWord, TokenTimingError, token_times
from .pipeline import prompt_words_from_json
from .units import FrameGrid, TokenUnitsError, UnitSpanError, token_unit_ranges, unit_offset

#: ``speech.token_rows``: the rows of S→T traces are the spoken text tokens (paper) or the prompt's tokens
TOKEN_ROWS = ("spoken", "prompt")

#: extra columns of the S→T known table (on top of crosstrace.filtering.FILTER_COLUMNS)
S2T_COLUMNS = [
    "status", "stage", "wav_path", "duration_s", "passes_qc", "wer", "aligner", "aligner_subject_start_s",
    "aligner_subject_end_s", "subject_start_s", "subject_end_s", "n_frames", "n_units", "frame_start",
    "frame_end", "dedup_start", "dedup_end", "unit_offset", "pos_start", "pos_end", "dedup", "run_lengths",
    "text_ids", "text_tokens", "subject_token_start", "subject_token_end", "token_start_s", "token_end_s",
    "token_unit_start", "token_unit_end", "lead_silence_units", "trail_silence_units",
    "token_rows", "pause_owner", "spoken_text", "pause_units", "subject_units", "tail_tokens",
]
#: the template tokens after the audio in tables written before ``tail_tokens`` (SpiritLM's ``[Text]``)
DEFAULT_TAIL = ("[Text]",)


def row_ids(row: dict, stray_space: bool = slm.STRAY_SPACE_DEFAULT) -> list[int]:
    """SpiritLM's S→T ids of a known-table row (its deduplicated units)."""
    return slm.s2t_ids([int(u) for u in row["dedup"]], stray_space=stray_space)


def _ints(value) -> list[int] | None:
    """A list column of a table row (a list or numpy array; None or NaN when the row has none)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return [int(x) for x in value]


def spoken_prompt(row: dict) -> SpokenPrompt:
    """What a known-table (or units-table) row holds of its spoken prompt: the units and run lengths (empty for
    a continuous family) and the clip; the family reads what it needs."""
    return SpokenPrompt(units=_ints(row.get("dedup")) or None, run_lengths=_ints(row.get("run_lengths")),
                        path=row.get("wav_path") or None)


def row_input(row: dict, lm: SpeechLM) -> LMInput:
    """The S→T input of an ``ok`` known-table row, built by its family (SpiritLM from the units; Qwen2-Audio
    from the clip), checked against the row: as many audio positions as the table's ``n_units``."""
    if row.get("status", "ok") != "ok":
        raise SpanError(row.get("reason") or "no S→T prompt")
    inp = lm.s2t(spoken_prompt(row))
    if "n_units" in row and inp.audio.n_positions != int(row["n_units"]):
        raise SpanError(f"the {lm.family} input has {inp.audio.n_positions} audio positions, the known table "
                        f"{int(row['n_units'])} (was the table built from other audio?)")
    return inp


def row_span(r: dict, offset: int) -> tuple[int, int]:
    """The subject span [b, e) of an ``ok`` known-table row whose first audio position is ``offset``: from the
    first position of the subject's first text token to the last of its last (pause positions inside it are
    not the subject's: :func:`audio_subject_positions`). Raises :class:`SpanError` for a quarantined row, or
    when the span differs from the row's ``pos_start`` / ``pos_end`` (the table was built with other prompt
    settings, e.g. another ``stray_space`` or template)."""
    if r.get("status", "ok") != "ok":
        raise SpanError(r.get("reason") or "no S→T prompt")
    sb, se = int(r["subject_token_start"]), int(r["subject_token_end"])
    b, e = offset + int(r["token_unit_start"][sb]), offset + int(r["token_unit_end"][se - 1])
    if (b, e) != (int(r["pos_start"]), int(r["pos_end"])):
        raise SpanError(f"recomputed span {(b, e)} differs from the known table's ({r['pos_start']}, {r['pos_end']}) "
                        "(was the table built with another stray_space or template?)")
    return b, e


def audio_subject_positions(r: dict, offset: int) -> list[int]:
    """The subject's audio positions: the LM positions owned by the subject's text tokens, in order. The one
    definition of "the subject's units" (corruption, noise scale, similarity) for every family: inside
    :func:`row_span`'s span, except pause positions between the subject's words (``pause_owner="none"``)."""
    row_span(r, offset)
    return [offset + u for k in range(int(r["subject_token_start"]), int(r["subject_token_end"]))
            for u in range(int(r["token_unit_start"][k]), int(r["token_unit_end"][k]))]


def row_prompt(r: dict, stray_space: bool = slm.STRAY_SPACE_DEFAULT) -> tuple[list[int], tuple[int, int]]:
    """SpiritLM's S→T ids and subject span [b, e) of a known-table row (:func:`row_span` on :func:`row_ids`)."""
    if r.get("status", "ok") != "ok":
        raise SpanError(r.get("reason") or "no S→T prompt")
    ids = row_ids(r, stray_space)
    return ids, row_span(r, unit_offset(ids))


def subject_positions(r: dict, stray_space: bool = slm.STRAY_SPACE_DEFAULT) -> list[int]:
    """SpiritLM's subject units as LM positions (:func:`audio_subject_positions` of :func:`row_ids`)."""
    _, (b, _) = row_prompt(r, stray_space)
    return audio_subject_positions(r, b - int(r["token_unit_start"][int(r["subject_token_start"])]))


def token_map(r: dict) -> TextTokenMap:
    """The text tokens of an ``ok`` known-table row as LM position ranges of their audio positions (for
    aggregation), and the template tokens after the audio.

    Positions use the row's ``unit_offset``: the prompt is ``unit_offset`` tokens (no row's), ``n_units`` audio
    positions, then the ``tail_tokens`` (SpiritLM: ``[Text]``), the last of them the last token.
    """
    off, n = int(r["unit_offset"]), int(r["n_units"])
    ranges = [(off + int(a), off + int(b)) for a, b in zip(r["token_unit_start"], r["token_unit_end"], strict=True)]
    rows = r.get("token_rows")
    tail = r.get("tail_tokens")
    tail = tuple(str(t) for t in tail) if tail is not None and not isinstance(tail, float) and len(tail) else DEFAULT_TAIL
    return TextTokenMap(int(r["known_id"]), [str(t) for t in r["text_tokens"]], ranges,
                        (int(r["subject_token_start"]), int(r["subject_token_end"])), off + n + len(tail) - 1,
                        off + n + len(tail), off,
                        rows if isinstance(rows, str) else "prompt",  # tables from before token_rows: prompt
                        tail)


def token_maps(known: pd.DataFrame) -> dict[int, TextTokenMap]:
    """:func:`token_map` of every ``ok`` row of an S→T known table, by known_id."""
    return {int(r["known_id"]): token_map(r) for r in known[known["status"] == "ok"].to_dict("records")}


def subject_unit_ids(rows: Sequence[dict], stray_space: bool = slm.STRAY_SPACE_DEFAULT) -> list[list[int]]:
    """For every S→T prompt with a subject: the unit token ids of the subject's units (:func:`subject_positions`)."""
    out = []
    for r in rows:
        if r.get("status", "ok") != "ok":
            continue
        ids = row_ids(r, stray_space)
        out.append([ids[p] for p in subject_positions(r, stray_space)])
    return out


@dataclass(frozen=True)
class TextTokens:
    """The text tokens of a text (the spoken text, or the prompt as T→T writes it) and the subject among them."""

    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]  # character span of each token in ``text``
    subject: tuple[int, int]  # text-token indices [b, e)
    text: str = ""


def family_text_tokens(lm: SpeechLM, text: str, subject: str | None = None,
                       subject_chars: tuple[int, int] | None = None) -> TextTokens:
    """The text tokens of ``text`` exactly as the family's T→T prompt writes them (:meth:`SpeechLM.text_tokens`;
    SpiritLM: after ``[Text]``; Qwen2-Audio: in the template's prompt slot), with the subject among them: the
    tokens over ``subject_chars`` of ``text``, else the first occurrence of ``subject``."""
    enc = lm.text_tokens(text, subject if subject_chars is None else None)
    toks = [str(t) for t in lm.tokenizer.convert_ids_to_tokens(enc.input_ids)]
    offsets = [tuple(o) for o in enc.offsets]
    span = enc.subject_span if subject_chars is None else token_span_from_offsets(offsets, *subject_chars)
    return TextTokens(list(enc.input_ids), toks, offsets, span, text)


def _spiritlm(lm, stray_space: bool = slm.STRAY_SPACE_DEFAULT) -> SpeechLM:
    """A speech family as given, or SpiritLM's prompts from its tokenizer (the functions below took one)."""
    if isinstance(lm, SpeechLM):
        return lm
    return slm.SpiritLMSpeech("spiritlm", None, lm, torch.device("cpu"), torch.float32, stray_space=stray_space)


def prompt_text_tokens(tokenizer, prompt: str, subject: str, stray_space: bool = slm.STRAY_SPACE_DEFAULT) -> TextTokens:
    """The prompt's text tokens: exactly those of its T→T prompt (SpiritLM: after the ``[Text]`` marker), so
    that T→T and S→T aggregate over the same tokens (``token_rows="prompt"``). ``tokenizer``: SpiritLM's
    tokenizer, or a loaded speech family."""
    return family_text_tokens(_spiritlm(tokenizer, stray_space), prompt, subject)


def spoken_text_tokens(tokenizer, spoken_text: str, subject_chars: tuple[int, int],
                       stray_space: bool = slm.STRAY_SPACE_DEFAULT) -> TextTokens:
    """The paper's spoken text tokens (``token_rows="spoken"``): the spoken text (digits and symbols written
    out, :attr:`crosstrace.speech.normalize.Normalized.spoken_text`) tokenized as the family's T→T prompt
    would write it (SpiritLM: after ``[Text]``); the subject = the tokens over ``subject_chars`` of the spoken
    text. ``tokenizer``: SpiritLM's tokenizer, or a loaded speech family."""
    return family_text_tokens(_spiritlm(tokenizer, stray_space), spoken_text, subject_chars=subject_chars)


def map_text_tokens(text: TextTokens, words: Sequence[PromptWord], run_lengths: Sequence[int],
                    grid: FrameGrid | None = None, pause_owner: str = "none") -> dict:
    """Time ranges and units of every text token, and the subject's units (known-table columns).

    ``words``: the words of ``text.text`` placed by the aligner; ``grid``: the frames' times (default one
    25 Hz chunk; audio over 100 s: :meth:`FrameGrid.hubert`). Raises :class:`TokenTimingError` (a word the
    aligner could not place) or :class:`UnitSpanError` (a text token that owns no unit; "units do not cover
    the subject" when it is a subject token).
    """
    grid = grid or FrameGrid.single(sum(run_lengths))
    starts, ends = token_times(text.text, text.offsets, words, pause_owner)
    try:
        tu = token_unit_ranges(starts, ends, run_lengths, names=text.tokens, grid=grid)
    except TokenUnitsError as e:
        if text.subject[0] <= e.token < text.subject[1]:
            raise UnitSpanError(f"the units do not cover the subject: {e}") from None
        raise
    sb, se = text.subject
    t0, t1 = starts[sb], ends[se - 1]
    f_a, f_end = grid.frame_range(t0, t1)
    return {
        "text_ids": text.ids, "text_tokens": text.tokens, "subject_token_start": sb, "subject_token_end": se,
        "token_start_s": [round(x, 6) for x in starts], "token_end_s": [round(x, 6) for x in ends],
        "token_unit_start": tu.unit_start, "token_unit_end": tu.unit_end,
        "lead_silence_units": tu.lead, "trail_silence_units": tu.trail, "pause_units": tu.pause,
        "subject_units": sum(tu.unit_end[k] - tu.unit_start[k] for k in range(sb, se)),
        "subject_start_s": t0, "subject_end_s": t1, "frame_start": f_a, "frame_end": f_end,
        "dedup_start": tu.unit_start[sb], "dedup_end": tu.unit_end[se - 1],
    }


def _json(value):
    return json.loads(value) if isinstance(value, str) and value else None


def aligned_text(lm, record: dict, alignment: dict, token_rows: str,
                 stray_space: bool = slm.STRAY_SPACE_DEFAULT) -> tuple[TextTokens, list[PromptWord]]:
    """The text tokens that become the S→T rows of ``record`` and the aligned words of their text.

    ``token_rows="spoken"``: the spoken text tokens and the alignment's ``spoken_words``; ``"prompt"``: the
    prompt's T→T tokens and its ``prompt_words``. ``lm``: the loaded speech family (or SpiritLM's tokenizer).
    Raises :class:`TokenTimingError` when the alignment lacks the word timings (a table written by an older
    version: re-run the align rule).
    """
    if token_rows not in TOKEN_ROWS:
        raise ValueError(f"token_rows must be one of {TOKEN_ROWS}, got {token_rows!r}")
    lm = _spiritlm(lm, stray_space)
    if token_rows == "prompt":
        words = prompt_words_from_json(alignment.get("prompt_words"))
        if not words:
            raise TokenTimingError("the alignment has no word timings (re-run the align rule)")
        return family_text_tokens(lm, record["prompt"], record["subject"]), words
    words = prompt_words_from_json(alignment.get("spoken_words"))
    chars = _json(alignment.get("spoken_subject"))
    if not words or not chars:
        raise TokenTimingError("the alignment has no spoken-word timings (re-run the align rule)")
    spoken = " ".join(w.word for w in words)
    return family_text_tokens(lm, spoken, subject_chars=(int(chars[0]), int(chars[1]))), words


def unit_token(i: int) -> str | None:
    """``[Hu123]`` for unit ids, ``[Text]``/``[Speech]`` for markers, else None (:func:`crosstrace.models.spiritlm.unit_label`)."""
    return slm.unit_label(i)


def _first(df: pd.DataFrame | None, known_id: int) -> dict | None:
    if df is None or df.empty:
        return None
    hit = df[df["known_id"] == known_id]
    return None if hit.empty else hit.iloc[0].to_dict()


def prompt_table(records: pd.DataFrame, speech_records: pd.DataFrame, manifest: pd.DataFrame, qc: pd.DataFrame | None,
                 alignment: pd.DataFrame, units: pd.DataFrame, aligner: str, lm=None,
                 stray_space: bool = slm.STRAY_SPACE_DEFAULT, token_rows: str = "spoken",
                 pause_owner: str = "none", tokenizer=None) -> pd.DataFrame:
    """One row per validated record with everything needed to build, trace and aggregate its S→T prompt.

    ``status`` is ``ok`` or ``quarantined`` (``stage`` says where: speech, synthesize or recordings, align, units,
    tokens, span; ``reason`` why). QC failures (``passes_qc`` False) stay ``ok`` but labelled. ``lm`` is the
    loaded speech family, which builds each S→T input from the clip's row of the units table (SpiritLM: its
    units; Qwen2-Audio: its audio positions and the clip) and writes the text tokens; SpiritLM's tokenizer
    alone also works (``lm``, or ``tokenizer=``), with ``stray_space`` its prompt layout. ``token_rows`` (``spoken`` | ``prompt``) and
    ``pause_owner`` (``none`` | ``preceding``) are the ``speech.token_rows`` / ``speech.pause_owner``
    settings, recorded in every row.
    """
    if token_rows not in TOKEN_ROWS:
        raise ValueError(f"speech.token_rows must be one of {TOKEN_ROWS}, got {token_rows!r}")
    if pause_owner not in PAUSE_OWNERS:
        raise ValueError(f"speech.pause_owner must be one of {PAUSE_OWNERS}, got {pause_owner!r}")
    lm = _spiritlm(lm if lm is not None else tokenizer, stray_space)
    selected = set(speech_records["known_id"].astype(int))
    align = alignment[alignment["aligner"] == aligner] if len(alignment) else alignment
    rows = []
    for r in records.to_dict("records"):
        kid = int(r["known_id"])
        row = {"known_id": kid, "subject": r["subject"], "attribute": r["attribute"], "prompt": r["prompt"],
               "status": "ok", "stage": "", "reason": "", "aligner": aligner, "token_rows": token_rows,
               "pause_owner": pause_owner}

        def bad(stage, reason, row=row, kid=kid):  # an upstream reason already names the record: once is enough
            reason = str(reason).removeprefix(f"known_id={kid}: ")
            row.update(status="quarantined", stage=stage, reason=f"known_id={kid}: {reason}")

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
        spoken = prompt_words_from_json(a.get("spoken_words"))
        if spoken:
            row.update(spoken_text=" ".join(w.word for w in spoken))
        u = _first(units, kid)
        if u is None or u.get("status") != "ok":
            bad("units", (u or {}).get("reason") or "no speech units")
            continue
        runs = _ints(u["run_lengths"])
        row.update(dedup=_ints(u["dedup"]), run_lengths=runs, n_frames=int(u["n_frames"]), n_units=len(runs))
        try:  # the family's S→T input: ids and where the audio sits in them
            inp = row_input(row, lm)
        except (SpanError, ValueError) as e:
            bad("units", str(e))
            continue
        try:  # a subject the aligner placed after the last real audio frame has no position (encoder padding)
            inp.audio.check_inside(row["aligner_subject_start_s"], row["aligner_subject_end_s"], "subject")
        except SpanError as e:
            bad("span", str(e))
            continue
        try:
            # units tables with chunk frame counts are HuBERT's (100 s chunks); otherwise one chunk at the grid's rate
            chunks = _json(u.get("chunk_frames")) or []
            grid = (FrameGrid.hubert(chunks, int(u["n_frames"])) if chunks
                    else FrameGrid.single(inp.audio.n_frames, inp.audio.rate))
            text, words = aligned_text(lm, r, a, token_rows)
            row.update(map_text_tokens(text, words, runs, grid, pause_owner))
        except (TokenTimingError, UnitSpanError, SpanError, ValueError) as e:
            bad("tokens", str(e))
            continue
        off, end = inp.audio.offset, inp.audio.offset + inp.audio.n_positions
        tail = inp.input_ids[end:]
        row.update(unit_offset=off, pos_start=off + row["dedup_start"], pos_end=off + row["dedup_end"],
                   tail_tokens=lm.token_labels(tail, lm.tokenizer.convert_ids_to_tokens(tail)))
    df = pd.DataFrame(rows)
    for c in S2T_COLUMNS:
        if c not in df:
            df[c] = None
    return df
