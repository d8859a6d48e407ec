"""From traced prompts to tables: raw IE per (prompt, kind, token, layer) and per-category IE.

AIE with bootstrap CIs is computed from the category table by :func:`crosstrace.report.stats.aie_table`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from tqdm import tqdm

from .api import PromptTooLongError, PromptTrace, Tracer
from .tokens import SpanError, category_means

log = logging.getLogger(__name__)

IE_COLUMNS = [
    "model", "modality", "known_id", "kind", "token_index", "token", "layer", "ie", "p_restored",
    "p_clean", "p_corrupted", "answer_id", "answer", "subject_start", "subject_end", "n_tokens",
    "noise_scale", "samples", "seed", "window", "engine",
]
QUARANTINE_COLUMNS = ["model", "modality", "known_id", "stage", "reason"]
CATEGORY_COLUMNS = ["model", "modality", "known_id", "kind", "category", "layer", "ie"]


class NonFiniteError(ValueError):
    pass


def trace_rows(trace: PromptTrace, tracer: Tracer, model: str, modality: str) -> pd.DataFrame:
    T = len(trace.input_ids)
    frames = []
    for kind, kt in trace.kinds.items():
        L = kt.p_restored.shape[1]
        tok_idx, layer = np.meshgrid(np.arange(T), np.arange(L), indexing="ij")
        frames.append(pd.DataFrame({
            "kind": kind,
            "token_index": tok_idx.ravel(),
            "token": np.asarray(trace.tokens, dtype=object)[tok_idx.ravel()],
            "layer": layer.ravel(),
            "ie": kt.ie.ravel(),
            "p_restored": kt.p_restored.ravel(),
        }))
    df = pd.concat(frames, ignore_index=True)
    s = tracer.settings
    const = {
        "model": model, "modality": modality, "known_id": trace.known_id, "p_clean": trace.p_clean,
        "p_corrupted": trace.p_corrupted, "answer_id": trace.answer_id, "answer": trace.answer,
        "subject_start": trace.subject_span[0], "subject_end": trace.subject_span[1], "n_tokens": T,
        "noise_scale": trace.noise_scale, "samples": s.noise.samples, "seed": s.noise.seed,
        "window": s.window, "engine": tracer.engine,
    }
    for k, v in const.items():
        df[k] = v
    return df[IE_COLUMNS]


def check_finite(trace: PromptTrace) -> None:
    vals = [trace.p_clean, trace.p_corrupted] + [float(np.max(np.abs(k.p_restored))) for k in trace.kinds.values()]
    if not all(math.isfinite(v) for v in vals):
        raise NonFiniteError("non-finite probabilities (NaN/inf logits) in the clean, corrupted or restored runs")


def trace_records(tracer: Tracer, records: Iterable[dict], model: str, modality: str, trace_one=None,
                  progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trace each record (dict with known_id, prompt, subject). Failures are quarantined, not dropped.

    ``trace_one(record) -> PromptTrace`` overrides how a record becomes a trace (S→T builds unit ids).
    """
    trace_one = trace_one or (lambda r: tracer.trace_text(int(r["known_id"]), r["prompt"], r["subject"]))
    records = list(records)
    frames, quarantined = [], []
    for r in tqdm(records, desc=f"tracing {model} {modality}", unit="prompt", disable=not progress):
        try:
            t = trace_one(r)
            check_finite(t)
        except (SpanError, NonFiniteError, PromptTooLongError) as e:
            log.warning("known_id %s quarantined: %s", r["known_id"], e)
            quarantined.append({"model": model, "modality": modality, "known_id": int(r["known_id"]), "stage": "trace", "reason": str(e)})
            continue
        frames.append(trace_rows(t, tracer, model, modality))
        log.info("known_id %s: answer %r p_clean %.4f p_corrupted %.4f", r["known_id"], t.answer, t.p_clean, t.p_corrupted)
    ie = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=IE_COLUMNS)
    return ie, pd.DataFrame(quarantined, columns=QUARANTINE_COLUMNS)


def category_table(ie: pd.DataFrame) -> pd.DataFrame:
    """Per prompt, kind, category and layer: the IE averaged over the category's positions."""
    out = []
    keys = ["model", "modality", "known_id", "kind"]
    for (model, modality, kid, kind), g in ie.groupby(keys, sort=True):
        T, L = int(g["n_tokens"].iloc[0]), int(g["layer"].max()) + 1
        mat = np.full((T, L), np.nan)
        mat[g["token_index"].to_numpy(), g["layer"].to_numpy()] = g["ie"].to_numpy()
        span = (int(g["subject_start"].iloc[0]), int(g["subject_end"].iloc[0]))
        for cat, vals in category_means(mat, span).items():
            out.append(pd.DataFrame({"model": model, "modality": modality, "known_id": kid, "kind": kind,
                                     "category": cat, "layer": np.arange(L), "ie": vals}))
    if not out:
        return pd.DataFrame(columns=CATEGORY_COLUMNS)
    return pd.concat(out, ignore_index=True)[CATEGORY_COLUMNS]


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
    dup = ie.duplicated(["model", "modality", "known_id", "kind", "token_index", "layer"])
    if dup.any():
        ids = sorted(ie.loc[dup, "known_id"].unique().tolist())[:10]
        raise ShardError(f"known_id {ids} appear in more than one shard")
    return ie, q
