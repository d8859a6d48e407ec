"""Side effects at the edges: logging for workflow scripts and atomic writes of tables and JSON.

Outputs are written to a temporary name and renamed into place, so a killed job never leaves a file
that looks complete.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path

import pandas as pd


def setup_logging(log_path: str | Path | None, level: int = logging.INFO) -> logging.Logger:
    """Send logging (and stderr, where tqdm draws its progress bars) to the rule's log file.

    Errors also reach the console: Snakemake itself reports a failed job only as ``message: None`` and
    the log path. An uncaught exception writes its traceback to the log and one line to the console;
    ``log.error`` records, and records logged with ``extra={"console": True}`` (such as the cost warning
    before a long trace), go to both.
    """
    console = sys.stderr
    handlers: list[logging.Handler] = [logging.StreamHandler(console)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the job
        sys.stderr = stream
        to_console = logging.StreamHandler(console)
        to_console.addFilter(lambda r: r.levelno >= logging.ERROR or getattr(r, "console", False))
        to_console.setFormatter(logging.Formatter(f"%(levelname)s: %(message)s (log: {log_path})"))
        handlers = [logging.StreamHandler(stream), to_console]
        sys.excepthook = _excepthook(console, str(log_path))
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger("crosstrace")


def _excepthook(console, log_path: str):
    def hook(typ, value, tb):
        traceback.print_exception(typ, value, tb)  # the full traceback, into the log (sys.stderr)
        sys.stderr.flush()
        print(f"ERROR: {typ.__name__}: {value} (traceback: {log_path})", file=console, flush=True)

    return hook


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


# Python type → parquet column type, for tables that must keep their schema when they have no rows.
_ARROW_TYPES = {int: "int64", str: "string", float: "float64", bool: "bool"}


def write_parquet(df: pd.DataFrame, path: str | Path, types: Mapping[str, type] | None = None) -> None:
    """Write atomically. ``types`` (column → int / str / float / bool) fixes the columns, their order and
    their parquet types, so a table with no rows is still a typed table (pandas writes empty object
    columns as type null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    schema = None
    if types is not None:
        import pyarrow as pa

        df = df.reindex(columns=list(types))
        schema = pa.schema([(c, pa.type_for_alias(_ARROW_TYPES[t])) for c, t in types.items()])
    df.to_parquet(tmp, index=False, schema=schema)
    os.replace(tmp, path)


def write_json(obj: object, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_parquets(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Shards (or any parquet tables with the same columns) as one table; no paths → an empty table."""
    frames = [pd.read_parquet(p) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def table_columns(row_type) -> list[str]:
    """A table's columns from its row dataclass (``SynthResult``, ``QCResult``, …), in field order."""
    return [f.name for f in fields(row_type)]


def run_shard(records: pd.DataFrame, step: Callable, columns: type | Sequence[str],
              desc: str = "shard") -> tuple[pd.DataFrame, float]:
    """Apply ``step`` to every record of a shard (named tuples, in order) and collect the rows.

    ``step(record)`` returns one row (a dataclass or a dict) or a list of rows. ``columns`` is the row
    dataclass or a column list: the table has exactly those columns, typed empty when the shard is. Also
    returns the seconds spent, for the log's per-prompt rate. Per-record failures are the step's to turn
    into quarantined rows; an exception here fails the job.
    """
    from tqdm import tqdm

    cols = table_columns(columns) if isinstance(columns, type) else list(columns)
    rows, t0 = [], time.perf_counter()
    for r in tqdm(list(records.itertuples(index=False)), desc=desc, unit="prompt"):
        out = step(r)
        for row in out if isinstance(out, list) else [out]:
            rows.append(asdict(row) if is_dataclass(row) else row)
    return pd.DataFrame(rows, columns=cols), time.perf_counter() - t0


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def console(message: str) -> None:
    """A line for the researcher's terminal as well as the job's log: setup_logging sends stderr to the
    log file, so this writes to the process's original stderr (Snakemake's console)."""
    logging.getLogger("crosstrace").warning(message)
    if sys.stderr is not sys.__stderr__ and sys.__stderr__ is not None:
        print(message, file=sys.__stderr__, flush=True)
