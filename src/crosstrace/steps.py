"""The workflow's model-facing steps, one function per rule: what ``scripts/`` call with Snakemake's I/O.

Each takes paths and plain settings (as the rule passes them), does one step and writes its outputs, so a
script is a few lines of glue and the step can be run, and tested, without Snakemake.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from .config import ModelSpec
from .data import no_records_left
from .io import read_json, read_parquets, write_json, write_parquet
from .modality import for_run, noise_std
from .models.family import load, prepare
from .resume import ShardCheckpoint, shard_key, stop_on_sigterm
from .shards import select_known_ids
from .trace import NoiseConfig, Tracer, TraceSettings
from .trace.atp import AtpConfig
from .trace.tables import IE_COLUMNS, QUARANTINE_COLUMNS, trace_records

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
                threads: int | None = None, log: logging.Logger = _log) -> pd.DataFrame:
    """Rule ``filter_known``: Known-t2t / Known-s2t, every validated record labelled by greedy decoding.

    S→T first builds the prompt table from the speech chain (``speech``: paths of ``speech_records``,
    ``manifest``, ``qc``, ``alignment``, ``units``; the shard lists are read as one table); rows without a
    traceable spoken prompt keep their stage and reason and are not decoded. No validated records end
    the run with a message naming ``validation`` (the quarantine table). ``batch_size`` changes speed only
    (the rule reads it from the config, not a param), though batch shape can flip a near-tie greedy decode:
    keep it fixed within a study."""
    table = pd.read_parquet(records)
    if table.empty:
        raise no_records_left(validation)
    if threads:
        torch.set_num_threads(threads)
    log.info("greedy decoding: %d new tokens, batches of %d prompts", max_new_tokens, batch_size)
    spec = ModelSpec.from_dict(read_json(model_json))
    lm = load(spec)
    mod = for_run(spec, modality, lm.tokenizer)
    if modality == "s2t":
        s = speech or {}
        table = mod.prompt_table(table, pd.read_parquet(s["speech_records"]), read_parquets(s["manifest"]),
                                 read_parquets(s["qc"]), pd.read_parquet(s["alignment"]), read_parquets(s["units"]),
                                 aligner)
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
    subjects, ``table`` = the validated records; S→T: the subjects' units, ``table`` = the S→T known table).
    T→T without records ends the run with a message naming ``validation`` (the quarantine table)."""
    records = pd.read_parquet(table)
    if modality == "t2t" and records.empty:
        raise no_records_left(validation)
    spec = ModelSpec.from_dict(read_json(model_json))
    lm = load(spec)
    res = noise_std(for_run(spec, modality, lm.tokenizer), lm.model, records)
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
    mod = for_run(spec, modality, lm.tokenizer)
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


__all__ = ["known_table", "noise_basis", "prepare_model", "trace_settings", "trace_shard"]
