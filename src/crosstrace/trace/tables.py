"""From traced prompts to tables: raw IE per (prompt, kind, token, layer) and per-category IE.

S→T prompts are traced per speech unit; :func:`aggregate_by_text_tokens` then averages the units of each
text token (paper §2.4), so S→T tables have the same rows as T→T ones. AIE with bootstrap CIs is computed
from the category table by :func:`crosstrace.report.stats.aie_table`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..grids import grid_frame, ie_grid
from ..report.stats import CATEGORY_COLUMNS
from ..spans import SpanError, category_positions
from .api import PromptTooLongError, PromptTrace, Tracer
from .backoff import OutOfMemoryAtOneRow

log = logging.getLogger(__name__)

IE_COLUMNS = [
    "model", "modality", "known_id", "kind", "token_index", "token", "layer", "ie", "p_restored",
    "p_clean", "p_corrupted", "answer_id", "answer", "answer_mode", "answer_tokens", "subject_start", "subject_end",
    "n_tokens", "noise_scale", "samples", "seed", "window", "engine",
]
QUARANTINE_COLUMNS = ["model", "modality", "known_id", "stage", "reason"]
#: CATEGORY_COLUMNS (from report.stats, which reads the table): ``n_positions``, ``p_restored`` and
#: ``p_corrupted`` let the AIE pool positions as ROME's code does (``stats.category_mean``)


class NonFiniteError(ValueError):
    pass


def trace_rows(trace: PromptTrace, tracer: Tracer, model: str, modality: str) -> pd.DataFrame:
    """:meth:`PromptTrace.to_frame` plus the run's identity and settings, in IE_COLUMNS order."""
    df = trace.to_frame()
    s = tracer.settings
    const = {"model": model, "modality": modality, "samples": s.noise.samples, "seed": s.noise.seed,
             "window": s.window, "engine": tracer.engine}
    for k, v in const.items():
        df[k] = v
    return df[IE_COLUMNS]


def check_finite(trace: PromptTrace) -> None:
    vals = [trace.p_clean, trace.p_corrupted] + [float(np.max(np.abs(k.p_restored))) for k in trace.kinds.values()]
    if not all(math.isfinite(v) for v in vals):
        raise NonFiniteError("non-finite probabilities (NaN/inf logits) in the clean, corrupted or restored runs")


def trace_records(tracer: Tracer, records: Iterable[dict], model: str, modality: str, trace_one=None,
                  progress: bool = True, on_prompt=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trace each record (dict with known_id, prompt, subject; attribute for the attribute answer modes).
    Failures are quarantined, not dropped.

    ``trace_one(record) -> PromptTrace`` overrides how a record becomes a trace (S→T builds unit ids).
    ``on_prompt(known_id, rows=..., quarantined=...)`` is told each finished prompt (a shard's checkpoint).
    """
    trace_one = trace_one or (lambda r: tracer.trace_text(int(r["known_id"]), r["prompt"], r["subject"],
                                                          attribute=r.get("attribute")))
    records = list(records)
    frames, quarantined = [], []
    for r in tqdm(records, desc=f"tracing {model} {modality}", unit="prompt", disable=not progress):
        try:
            t = trace_one(r)
            check_finite(t)
        except (SpanError, NonFiniteError, PromptTooLongError, OutOfMemoryAtOneRow) as e:
            log.warning("known_id %s quarantined: %s", r["known_id"], e)
            quarantined.append({"model": model, "modality": modality, "known_id": int(r["known_id"]), "stage": "trace", "reason": str(e)})
            if on_prompt:
                on_prompt(int(r["known_id"]), quarantined=quarantined[-1])
            continue
        frames.append(trace_rows(t, tracer, model, modality))
        if on_prompt:
            on_prompt(int(r["known_id"]), rows=frames[-1])
        log.info("known_id %s: answer %r p_clean %.4f p_corrupted %.4f", r["known_id"], t.answer, t.p_clean, t.p_corrupted)
    ie = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=IE_COLUMNS)
    return ie, pd.DataFrame(quarantined, columns=QUARANTINE_COLUMNS)


def category_table(ie: pd.DataFrame) -> pd.DataFrame:
    """Per prompt, kind, category and layer: what either averaging of :func:`crosstrace.report.stats.aie_table`
    needs. ``n_positions``: the category's positions in the prompt; ``ie`` and ``p_restored``: their means
    over those positions; ``p_corrupted``: the prompt's P_corrupted[o]. ROME's pooled mean weighs a prompt by
    ``n_positions``; the per-prompt mean reads ``ie``."""
    out = []
    for (model, modality, kid, kind), g in ie.groupby(["model", "modality", "known_id", "kind"], sort=True):
        ie_g, pr_g = ie_grid(g, "ie"), ie_grid(g, "p_restored")
        span = (int(g["subject_start"].iloc[0]), int(g["subject_end"].iloc[0]))
        L = ie_g.shape[1]
        for cat, pos in category_positions(span, ie_g.shape[0]).items():
            out.append(pd.DataFrame({"model": model, "modality": modality, "known_id": kid, "kind": kind,
                                     "category": cat, "layer": np.arange(L), "ie": ie_g[pos].mean(axis=0),
                                     "answer_mode": g["answer_mode"].iloc[0], "n_positions": len(pos),
                                     "p_restored": pr_g[pos].mean(axis=0),
                                     "p_corrupted": float(g["p_corrupted"].iloc[0]),
                                     # S→T: which text tokens the rows are (speech.token_rows); T→T: None
                                     "token_rows": g["token_rows"].iloc[0] if "token_rows" in g else None}))
    if not out:
        return pd.DataFrame(columns=CATEGORY_COLUMNS)
    return pd.concat(out, ignore_index=True)[CATEGORY_COLUMNS]


@dataclass(frozen=True)
class TextTokenMap:
    """The text tokens of one S→T prompt as ranges of LM positions (their speech units).

    ``ranges[k] = (p0, p1)``: text token k owns LM positions ``[p0, p1)`` (in order, disjoint; positions
    between two ranges are pause units, owned by no token); ``subject``: text-token indices ``[b, e)`` of the
    subject; ``last``: the LM position that predicts the answer (SpiritLM: the ``[Text]`` marker); ``first_unit``:
    the LM position of the first speech unit or audio position (positions before it belong to no row; units
    before ``ranges[0][0]`` and after ``ranges[-1][1]`` are silence, owned by no token); ``token_rows``: which
    text tokens these are (``speech.token_rows``: ``spoken``, the paper's spoken text tokens, or ``prompt``, the
    prompt's T→T tokens); ``tail``: the template tokens after the audio, the positions
    ``[n_positions − len(tail), n_positions)``, each a row of its own (SpiritLM: ``[Text]``; Qwen2-Audio:
    ``<|audio_eos|>`` and any text after the prompt), the last of them ``last``.
    """

    known_id: int
    tokens: list[str]
    ranges: list[tuple[int, int]]
    subject: tuple[int, int]
    last: int
    n_positions: int
    first_unit: int
    token_rows: str = "spoken"
    tail: tuple[str, ...] = ("[Text]",)

    @property
    def tail_positions(self) -> range:
        return range(self.n_positions - len(self.tail), self.n_positions)


#: extra columns of an aggregated S→T IE table: the LM positions [pos_start, pos_end) averaged into each row,
#: and which text tokens the rows are (speech.token_rows)
AGGREGATED_COLUMNS = IE_COLUMNS + ["pos_start", "pos_end", "token_rows"]


def aggregate_by_text_tokens(ie_units: pd.DataFrame, maps: Mapping[int, TextTokenMap]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-unit S→T IE → per-text-token IE (paper §2.4: "aggregated, as for text, by the corresponding text
    tokens"), plus quarantined prompts.

    Row k < n of a prompt is text token k, its IE at layer l the mean IE of its units at l (``p_restored``
    likewise); the rows after them are the template tokens after the audio (:attr:`TextTokenMap.tail`), one
    row each, the last of them the S→T "last token" (SpiritLM: ``[Text]``, the only one).
    ``subject_start``/``subject_end`` and
    ``n_tokens`` are in these rows, so :func:`category_table` applies the six categories over text tokens
    exactly as for T→T. A traced prompt with no map, or whose map does not fit its trace, is quarantined.
    """
    frames, quarantined = [], []
    for (model, modality, kid), g in ie_units.groupby(["model", "modality", "known_id"], sort=True):
        tm = maps.get(int(kid))
        T = int(g["n_tokens"].iloc[0])
        if tm is None or tm.n_positions != T or tm.last != T - 1:
            why = "no text-token map in the known table" if tm is None else (
                f"the text-token map ({tm.n_positions} positions) does not fit the trace ({T} positions)")
            quarantined.append({"model": model, "modality": modality, "known_id": int(kid), "stage": "aggregate",
                                "reason": f"known_id={kid}: {why}"})
            continue
        rows = [*tm.ranges, *((p, p + 1) for p in tm.tail_positions)]
        names = [*tm.tokens, *tm.tail]
        for kind, gk in g.groupby("kind", sort=False):
            ie, pr = ie_grid(gk, "ie"), ie_grid(gk, "p_restored")
            agg = {"ie": np.stack([ie[a:b].mean(axis=0) for a, b in rows]),
                   "p_restored": np.stack([pr[a:b].mean(axis=0) for a, b in rows])}
            df = grid_frame(agg, names, pos_start=[a for a, _ in rows], pos_end=[b for _, b in rows]).assign(kind=kind)
            first = gk.iloc[0]
            for c in ["model", "modality", "known_id", "p_clean", "p_corrupted", "answer_id", "answer", "answer_mode",
                      "answer_tokens", "noise_scale", "samples", "seed", "window", "engine"]:
                df[c] = first[c]
            df["subject_start"], df["subject_end"], df["n_tokens"] = tm.subject[0], tm.subject[1], len(rows)
            df["token_rows"] = tm.token_rows
            frames.append(df[AGGREGATED_COLUMNS])
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=AGGREGATED_COLUMNS)
    return out, pd.DataFrame(quarantined, columns=QUARANTINE_COLUMNS)


UNIT_VIEW_COLUMNS = IE_COLUMNS + ["text_token_index", "text_token", "region"]


def unit_view(ie_units: pd.DataFrame, maps: Mapping[int, TextTokenMap]) -> pd.DataFrame:
    """The per-unit S→T IE table (not in the paper) with, per LM position, the text token that owns it.

    ``region``: ``token`` (a unit owned by text token ``text_token_index``), ``silence`` (a unit before the
    first or after the last word: no token), ``pause`` (a unit between two words that no token owns),
    ``marker`` (the template around the audio: BOS, the stray ``▁``, ``[Speech]``; Qwen2-Audio's
    ``<|audio_bos|>``, ``<|audio_eos|>`` and text around the prompt slot) or ``last`` (SpiritLM's ``[Text]``,
    the position that predicts the answer). Prompts without a map are left out (they are quarantined by :func:`aggregate_by_text_tokens`).
    """
    frames = []
    for kid, g in ie_units.groupby("known_id", sort=True):
        tm = maps.get(int(kid))
        if tm is None or tm.n_positions != int(g["n_tokens"].iloc[0]):
            continue
        owner = np.full(tm.n_positions, -1)
        region = np.full(tm.n_positions, "marker", dtype=object)
        region[tm.first_unit : tm.tail_positions.start] = "silence"
        region[tm.ranges[0][0] : tm.ranges[-1][1]] = "pause"
        for k, (a, b) in enumerate(tm.ranges):
            owner[a:b] = k
            region[a:b] = "token"
        region[tm.last] = "last"
        df = g.copy()
        pos = df["token_index"].to_numpy()
        df["text_token_index"] = owner[pos]
        df["text_token"] = [tm.tokens[o] if o >= 0 else None for o in owner[pos]]
        df["region"] = region[pos]
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=UNIT_VIEW_COLUMNS)
    return pd.concat(frames, ignore_index=True)[UNIT_VIEW_COLUMNS]


class ShardError(ValueError):
    pass


def merge_shards(paths: Iterable[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Concatenate shard tables (and their quarantine files), refusing unreadable or overlapping shards."""
    frames, quarantined = [], []
    for p in paths:
        try:
            frames.append(pd.read_parquet(p))
            quarantined.append(pd.read_parquet(str(p).removesuffix(".parquet") + ".quarantine.parquet"))
        except Exception as e:  # pyarrow raises several types for truncated files
            raise ShardError(f"shard {p} is unreadable ({type(e).__name__}: {e}); delete it and rerun") from e
    ie = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=IE_COLUMNS)
    q = pd.concat(quarantined, ignore_index=True) if quarantined else pd.DataFrame(columns=QUARANTINE_COLUMNS)
    modes = sorted(ie["answer_mode"].unique()) if "answer_mode" in ie.columns else []
    if len(modes) > 1:
        raise ShardError(f"shards traced with different trace.answer settings {modes}; delete them and rerun")
    dup = ie.duplicated(["model", "modality", "known_id", "kind", "token_index", "layer"])
    if dup.any():
        ids = sorted(ie.loc[dup, "known_id"].unique().tolist())[:10]
        raise ShardError(f"known_id {ids} appear in more than one shard")
    return ie, q
