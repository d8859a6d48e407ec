"""Resume a trace shard inside itself: the prompts a killed job finished are kept, a rerun traces the rest.

A shard of paper-scale prompts can run for hours on a GPU, and a preempted job (Slurm sends SIGTERM,
then SIGKILL) would start again from its first prompt. :class:`ShardCheckpoint` keeps each finished
prompt beside the shard's outputs, in a hidden folder ``.{shard}.checkpoint/`` next to
``{shard}.parquet``:

- one file per finished prompt, written atomically (a temporary name, then a rename) and never changed:
  ``{known_id}.parquet`` (its IE rows) or ``{known_id}.quarantine.json`` (its quarantine row);
- ``key.json``: a hash of everything that decides the shard's rows: the rule's params (model entry,
  modality, trace settings, the shard's known_ids) and the contents of its inputs (the noise basis and
  the prompts' records). A run under another key discards the folder before it starts, so a config or
  input change that reruns the shard never mixes old rows in.

The shard's tables are always assembled from these files, in the shard's order, whether it ran in one go
or in several, so a resumed shard's parquet is byte-identical to an uninterrupted one. Snakemake never
takes a partial shard as complete: its declared outputs are written (atomically) only after the last
prompt, and the folder is removed after that. Speed settings (``trace.max_rows``, threads, device) are
not in the key: they do not change which rows a prompt has.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from . import __version__
from .io import read_json, write_json, write_parquet

_log = logging.getLogger(__name__)


def checkpoint_dir(out: str | Path) -> Path:
    """The checkpoint folder of the shard whose IE table is ``out`` (``shards/3.parquet`` → ``shards/.3.checkpoint``)."""
    out = Path(out)
    return out.with_name(f".{out.name.removesuffix('.parquet')}.checkpoint")


def shard_key(model: Mapping, modality: str, trace: Mapping, noise: Mapping, known_ids: Sequence[int],
              records: pd.DataFrame) -> str:
    """Hash of what decides a shard's rows: params (model entry, modality, trace settings, known_ids) and
    the inputs' contents (noise basis, the shard's records from the known table)."""
    blob = json.dumps({"crosstrace": __version__, "model": model, "modality": modality, "trace": trace, "noise": noise,
                       "known_ids": [int(i) for i in known_ids],
                       "records": records.to_json(orient="records", default_handler=str)},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ShardCheckpoint:
    """The finished prompts of one shard (see the module docstring). Opening it discards a checkpoint
    written under another key and any temporary file a killed write left behind."""

    def __init__(self, out: str | Path, key: str, log: logging.Logger = _log):
        self.dir, self.key, self.log = checkpoint_dir(out), key, log
        if self.dir.exists():
            stored = self.dir / "key.json"
            if not stored.exists() or read_json(stored).get("key") != key:
                log.info("checkpoint %s discarded: written under other settings or inputs", self.dir)
                shutil.rmtree(self.dir)
        if not self.dir.exists():
            self.dir.mkdir(parents=True)
            write_json({"key": key}, self.dir / "key.json")
        for tmp in self.dir.glob(".*.tmp"):  # a write the kill interrupted; its prompt is traced again
            tmp.unlink()

    def known_ids(self) -> set[int]:
        """The prompts finished so far (traced or quarantined)."""
        return {int(p.name.split(".")[0]) for p in self.dir.iterdir() if p.name[0].isdigit()}

    def todo(self, records: pd.DataFrame) -> list[dict]:
        """The records still to trace, in order; logs how many were finished before."""
        done = self.known_ids()
        left = [r for r in records.to_dict("records") if int(r["known_id"]) not in done]
        if done:
            ids = sorted(done)
            self.log.info("resuming from %s: %d of %d prompts finished before (known_id %s), %d to trace", self.dir,
                          len(done), len(records), ids if len(ids) <= 20 else f"{ids[:20]} …", len(left))
        return left

    def add(self, known_id: int, rows: pd.DataFrame | None = None, quarantined: Mapping | None = None) -> None:
        """Record one finished prompt: its IE rows, or its quarantine row (atomic: complete or absent)."""
        if rows is not None:
            write_parquet(rows, self.dir / f"{int(known_id)}.parquet")
        else:
            write_json(dict(quarantined), self.dir / f"{int(known_id)}.quarantine.json")

    def tables(self, known_ids: Sequence[int], ie_columns: Sequence[str],
               quarantine_columns: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The shard's IE rows and quarantined prompts, in the order of ``known_ids``; every one must be finished."""
        frames, quarantined = [], []
        for k in (int(i) for i in known_ids):
            rows, q = self.dir / f"{k}.parquet", self.dir / f"{k}.quarantine.json"
            if rows.exists():
                frames.append(pd.read_parquet(rows))
            elif q.exists():
                quarantined.append(read_json(q))
            else:
                raise FileNotFoundError(f"known_id {k} has no entry in the checkpoint {self.dir}")
        ie = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(ie_columns))
        return ie, pd.DataFrame(quarantined, columns=list(quarantine_columns))

    def remove(self) -> None:
        """Once the shard's outputs are written, the checkpoint has served."""
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def stop_on_sigterm(progress: Callable[[], str], log: logging.Logger = _log) -> Iterator[None]:
    """SIGTERM (Slurm's preemption, requeue or scancel; Snakemake stopping its jobs) ends the job with a log
    line saying what is kept, and exit status 143, instead of silently. Only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        log.warning("SIGTERM: stopping; %s", progress())
        raise SystemExit(128 + signum)

    before = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


__all__ = ["ShardCheckpoint", "checkpoint_dir", "shard_key", "stop_on_sigterm"]
