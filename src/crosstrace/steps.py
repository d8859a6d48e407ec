"""The workflow's model-facing steps, one function per rule: what ``scripts/`` call with Snakemake's I/O.

Each takes paths and plain settings (as the rule passes them), does one step and writes its outputs, so a
script is a few lines of glue and the step can be run, and tested, without Snakemake.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from .config import ModelSpec
from .data import no_records_left
from .filtering import greedy_answer_matches, select_for_trace, unexpected_answers
from .io import console, read_json, read_parquets, write_json, write_parquet
from .modality import for_run, modality_class, noise_std
from .models.family import load, prepare
from .report.stats import aie_table
from .resume import ShardCheckpoint, shard_key, stop_on_sigterm
from .shards import select_known_ids
from .trace import NoiseConfig, Tracer, TraceSettings
from .trace.atp import AtpConfig
from .trace.tables import IE_COLUMNS, QUARANTINE_COLUMNS, category_table, merge_shards, trace_records

_log = logging.getLogger("crosstrace")


def prepare_model(entry: dict, cache_dir: str | None, out: str | Path, log: logging.Logger = _log) -> dict:
    """Rule ``prepare_model``: resolve the entry to a loadable path once; write the entry with ``resolved``."""
    spec = ModelSpec.from_dict(entry)
    path = prepare(spec, cache_dir)
    log.info("model %s (%s): %s -> %s", spec.name, spec.family, spec.path, path)
    prepared = {**entry, "resolved": path}
    write_json(prepared, out)
    return prepared


def known_table(model_json: str | Path, modality: str, records: str | Path, max_new_tokens: int, batch_size: int,
                out: str | Path, validation: str | Path, speech: dict | None = None, aligner: str | None = None,
                threads: int | None = None, log: logging.Logger = _log, rows: dict | None = None) -> pd.DataFrame:
    """Rule ``filter_known``: Known-t2t / Known-s2t, every validated record labelled by greedy decoding.

    The modality's prompt table comes first (``mod.prompt_table``): T→T decodes the records; S→T builds
    its spoken prompts from the speech chain, ``speech`` = the paths of ``speech_records``, ``manifest``,
    ``qc``, ``alignment``, ``units`` (the rule's inputs; shard lists are read as one table; ``units`` is the
    family's speech input step: SpiritLM's units, Qwen2-Audio's audio positions) ``aligner``
    (``speech.align.use``) and ``rows`` (the ``speech.token_rows`` and ``speech.pause_owner`` settings); rows without a traceable spoken prompt keep their stage and reason and are not
    decoded. No validated records end the run with a message naming ``validation`` (the quarantine table).
    ``batch_size`` changes speed only (the rule reads it from the config, not a param): near-ties, which batch
    shape could flip, are decoded again on their own (:func:`crosstrace.filtering.filter_known`)."""
    table = pd.read_parquet(records)
    if table.empty:
        raise no_records_left(validation)
    if threads:
        torch.set_num_threads(threads)
    log.info("greedy decoding: %d new tokens, batches of %d prompts", max_new_tokens, batch_size)
    spec = ModelSpec.from_dict(read_json(model_json))
    lm = load(spec)
    mod = for_run(spec, modality, lm)
    tables = {k: read_parquets([v] if isinstance(v, str | Path) else v) for k, v in (speech or {}).items()}
    table = mod.prompt_table(table, aligner=aligner, **(rows or {}), **tables)
    known = mod.label_known(lm.model, table, max_new_tokens, batch_size)
    bad = known["status"] != "ok"
    if bad.any():
        log.info("%s %s: %d records, %d with a traceable prompt, %d quarantined by stage %s", spec.name, modality,
                 len(known), int((~bad).sum()), int(bad.sum()), known.loc[bad, "stage"].value_counts().to_dict())
    counts = known["label"].value_counts().to_dict()
    log.info("%s %s: %d of %d known (exact %d, partial %d)", spec.name, modality, int(known["known"].sum()),
             len(known), counts.get("exact", 0), counts.get("partial", 0))
    write_parquet(known, out)
    return known


def noise_basis(model_json: str | Path, modality: str, table: str | Path, out: str | Path, validation: str | Path,
                log: logging.Logger = _log) -> dict:
    """Rule ``noise_std``: the std of the input embeddings that ν is a multiple of (T→T: the dataset's
    subjects, ``table`` = the validated records; S→T: the input embeddings at the subjects' audio positions,
    SpiritLM's unit rows or Qwen2-Audio's projected frames, ``table`` = the S→T known table, one row per
    validated record). An empty table ends the run with a message naming ``validation`` (the
    quarantine table)."""
    records = pd.read_parquet(table)
    if records.empty:
        raise no_records_left(validation)
    spec = ModelSpec.from_dict(read_json(model_json))
    lm = load(spec)
    res = noise_std(for_run(spec, modality, lm), records)
    log.info("%s %s: std = %.6f (%s)", spec.name, modality, res["std"], res)
    write_json(res, out)
    return res


def trace_settings(trace: dict, max_rows: int | None = 512) -> TraceSettings:
    """The ``trace`` section of the config (as the rule passes it) as tracer settings. ``max_rows`` changes
    speed only, so the rule reads it from the config and not as a param (a param change reruns)."""
    return TraceSettings(kinds=tuple(trace["kinds"]), window=trace["window"], noise=NoiseConfig(**trace["noise"]),
                         engine=trace["engine"], max_rows=max_rows, answer=trace["answer"],
                         max_tokens=trace["max_prompt_tokens"], atp=AtpConfig(**trace.get("atp", {})))


def trace_shard(model_json: str | Path, modality: str, trace: dict, noise_json: str | Path, known: str | Path,
                known_ids: list[int], out_ie: str | Path, out_quarantine: str | Path, shard: int | str = "",
                max_rows: int | None = 512, threads: int | None = None,
                log: logging.Logger = _log) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rule ``trace``: trace one shard, the prompts ``known_ids`` of the known table (a fixed block of the
    selection, :mod:`crosstrace.shards`); IE rows, and quarantined prompts with their reasons. Each
    finished prompt goes to the shard's checkpoint first, so a rerun of a killed shard traces only the
    prompts it had not finished (:mod:`crosstrace.resume`)."""
    if threads:
        torch.set_num_threads(threads)
    spec = ModelSpec.from_dict(read_json(model_json))
    lm = load(spec)
    settings = trace_settings(trace, max_rows)
    tracer = Tracer(lm.model, lm.tokenizer, settings, read_json(noise_json)["std"])
    mod = for_run(spec, modality, lm)
    records = select_known_ids(pd.read_parquet(known), known_ids)
    log.info("shard %s: %d prompts (known_id %s), engine %s (max_rows %s), noise scale %.4f", shard, len(records),
             list(known_ids), tracer.engine, settings.max_rows, tracer.noise_scale)
    done = ShardCheckpoint(out_ie, shard_key(read_json(model_json), modality, trace, read_json(noise_json), known_ids,
                                             records), log)
    with stop_on_sigterm(lambda: f"{len(done.known_ids())} of {len(records)} prompts are in {done.dir}", log):
        trace_records(tracer, done.todo(records), spec.name, modality, trace_one=lambda r: mod.trace(tracer, r),
                      on_prompt=done.add)
    ie, quarantined = done.tables(known_ids, IE_COLUMNS, QUARANTINE_COLUMNS)
    log.info("shard %s: %d prompts in = %d traced + %d quarantined", shard, len(records),
             ie["known_id"].nunique(), len(quarantined))
    write_parquet(quarantined, out_quarantine)
    write_parquet(ie, out_ie)
    done.remove()
    return ie, quarantined


def merge_run(shards: Sequence[str | Path], known: str | Path, noise: str | Path, model: str, modality: str,
              trace: dict, stats: dict, select: dict, on_empty: str, out_ie: str | Path, out_categories: str | Path,
              out_aie: str | Path, out_quarantine: str | Path, out_summary: str | Path,
              log: logging.Logger = _log) -> dict:
    """Rule ``merge``: every shard of a run → the token rows (``ie_per_prompt``), per-category IE, AIE with
    bootstrap CIs, the quarantine and ``summary.json``; returns the summary.

    The shards are merged by :func:`~crosstrace.trace.tables.merge_shards` (unreadable, overlapping or mixed
    shards are refused); the modality's ``token_rows`` turns traced positions into token rows (S→T: units
    averaged per text token). ``trace``, ``stats``, ``select`` are the rule's params (the config's trace
    settings; ``n_boot``, ``seed``, ``level``, ``category_mean``; ``require_known``, ``expect_answer``). A run
    that traced nothing stops with a console message (``on_empty: fail``) or warns and goes on (``warn``)."""
    ie, quarantined = merge_shards(shards)
    known_t = pd.read_parquet(known)
    ie, q_rows, extras = modality_class(modality).token_rows(ie, known_t)
    quarantined = pd.concat([quarantined, q_rows], ignore_index=True) if len(q_rows) else quarantined
    cats = category_table(ie)
    aie = aie_table(cats, n_boot=stats["n_boot"], seed=stats["seed"], level=stats["level"],
                    category_mean=stats["category_mean"])
    summary = run_summary(ie, known_t, quarantined, read_json(noise), model, modality, trace, stats, select, extras)
    if summary["traced"] == 0:
        _nothing_traced(summary, model, modality, select, on_empty)
    unexpected = summary["unexpected_answer_ids"]
    if unexpected and select["expect_answer"] == "flag":
        console(f"{model} {modality}: {len(unexpected)} traced prompt(s) answer with a token that does not start the "
                f"attribute (known_id {unexpected[:10]}{' …' if len(unexpected) > 10 else ''}); flagged in the "
                "traced-prompts table (filter.expect_answer: flag)")
    log.info("summary: %s", summary)
    write_parquet(ie, out_ie)
    write_parquet(cats, out_categories)
    write_parquet(quarantined, out_quarantine)
    write_parquet(aie, out_aie)
    write_json(summary, out_summary)
    return summary


def run_summary(ie: pd.DataFrame, known: pd.DataFrame, quarantined: pd.DataFrame, noise: dict, model: str,
                modality: str, trace: dict, stats: dict, select: dict, extras: dict | None = None) -> dict:
    """``summary.json`` of a run: the Known counts, what was traced and quarantined, ROME's expect check
    (``filter.expect_answer``), the settings behind every number, and the modality's ``extras``."""
    per_prompt = ie.drop_duplicates("known_id")
    attribute = known.set_index("known_id")["attribute"]
    first_token = known.set_index("known_id")["first_token"]
    unexpected = [int(k) for k, a in zip(per_prompt["known_id"], per_prompt["answer"], strict=True)
                  if not greedy_answer_matches(str(a), trace["answer"], first_token.get(k), str(attribute.get(k, "")))]
    candidates = select_for_trace(known, None, require_known=select["require_known"], expect_answer="trace")
    skipped = unexpected_answers(candidates) if select["expect_answer"] == "skip" else candidates.iloc[:0]
    return {
        "model": model,
        "modality": modality,
        "records": len(known),
        "known": int(known["known"].sum()),
        "known_exact": int((known["label"] == "exact").sum()),
        "known_partial": int((known["label"] == "partial").sum()),
        # S→T: records without a traceable spoken prompt (no speech, alignment or units; see known.parquet)
        "no_prompt": int((known["label"] == "quarantined").sum()),
        "traced": int(ie["known_id"].nunique()) if len(ie) else 0,
        "quarantined": len(quarantined),
        # ROME's expect check (filter.expect_answer): traced prompts whose answer token does not start the
        # attribute, and known prompts left out for that reason (skip mode only)
        "expect_answer": select["expect_answer"],
        "unexpected_answer": len(unexpected),
        "unexpected_answer_ids": unexpected,
        "skipped_unexpected": len(skipped),
        "corruption_not_lowering": int((per_prompt["p_corrupted"].astype(float)
                                        >= per_prompt["p_clean"].astype(float)).sum()),
        "noise_std": noise["std"],
        "noise_scale": float(ie["noise_scale"].iloc[0]) if len(ie) else None,
        "samples": trace["noise"]["samples"],
        "seed": trace["noise"]["seed"],
        "window": trace["window"],
        "kinds": trace["kinds"],
        "answer": trace["answer"],
        "engine": str(ie["engine"].iloc[0]) if len(ie) else None,
        # how a category's positions make its AIE (stats.category_mean): rome pools them, as the paper
        "category_mean": stats["category_mean"],
        "ci": {"method": "percentile bootstrap over prompts (each with all of its positions)",
               **{k: v for k, v in stats.items() if k != "category_mean"}},
        **(extras or {}),
    }


def _nothing_traced(summary: dict, model: str, modality: str, select: dict, on_empty: str) -> None:
    """A run without a traced prompt: stop with a console error (``fail``) or put a warning in the summary."""
    why = (f"{summary['known']} of {summary['records']} records are known to the model"
           if select["require_known"] else f"{summary['records']} records (filter.require_known: false)")
    msg = (f"no prompt was traced for {model} {modality}: {why}, {summary['skipped_unexpected']} skipped by "
           f"filter.expect_answer, {summary['quarantined']} quarantined in tracing. Trace a model that knows some "
           "of the facts, set filter.require_known: false to trace every record, or trace.on_empty: warn to "
           "finish the run anyway.")
    if on_empty == "fail":
        console(f"ERROR: {msg}")
        raise SystemExit(1)
    summary["warning"] = msg
    console(f"WARNING: {msg}")


__all__ = ["known_table", "merge_run", "noise_basis", "prepare_model", "run_summary", "trace_settings", "trace_shard"]
