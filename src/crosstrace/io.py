"""Side effects at the edges: logging for workflow scripts and atomic writes of tables and JSON.

Outputs are written to a temporary name and renamed into place, so a killed job never leaves a file
that looks complete; a failed write removes its temporary file, and a full disk is reported as such (the file,
and the space free there), never as the error of whatever happened to write to the log at that moment.
"""

from __future__ import annotations

import errno
import glob
import json
import logging
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields, is_dataclass
from io import TextIOBase
from pathlib import Path

import pandas as pd


def setup_logging(log_path: str | Path | None, level: int = logging.INFO) -> logging.Logger:
    """Send logging (and stderr, where tqdm draws its progress bars) to the rule's log file.

    Errors also reach the console: Snakemake itself reports a failed job only as ``message: None`` and
    the log path. An uncaught exception writes its traceback to the log and one line to the console;
    ``log.error`` records, and records logged with ``extra={"console": True}`` (such as the cost warning
    before a long trace), go to both. A log that cannot be written (a full disk) never fails the job's own
    work: the console says so once, with the free space, and gets the log's lines instead (:class:`JobLog`).
    """
    console = sys.stderr
    handlers: list[logging.Handler] = [logging.StreamHandler(console)]
    if log_path:
        stream = JobLog(log_path, console)
        sys.stderr = stream
        to_console = logging.StreamHandler(console)
        to_console.addFilter(lambda r: r.levelno >= logging.ERROR or getattr(r, "console", False))
        to_console.setFormatter(logging.Formatter(f"%(levelname)s: %(message)s (log: {log_path})"))
        handlers = [logging.StreamHandler(stream), to_console]
        sys.excepthook = _excepthook(console, stream)
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger("crosstrace")


class JobLog(TextIOBase):
    """A job's log file standing in for stderr, which tqdm and libraries write to from deep inside other
    work (model loading draws a progress bar). If the file cannot be written (disk full, quota), that
    write must not become the job's error: the failure is announced once on the console with the path and
    the free space there, and from then on the log's lines go to the console."""

    def __init__(self, path: str | Path, console):
        self.path, self.console = Path(path), console
        self.failed: OSError | None = None
        self.file = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the job
        except OSError as e:
            self._fail(e)

    def write(self, text: str) -> int:
        if self.file is not None:
            try:
                return self.file.write(text)
            except OSError as e:
                self._fail(e)
        self.console.write(text)
        return len(text)

    def flush(self) -> None:
        if self.file is not None:
            try:
                self.file.flush()
            except OSError as e:
                self._fail(e)
        self.console.flush()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return (self.file or self.console).fileno()

    def isatty(self) -> bool:
        return False

    def _fail(self, error: OSError) -> None:
        self.failed = error
        if self.file is not None:
            try:
                self.file.close()  # drops what it could not write; closing may retry the flush
            except OSError:
                pass
            self.file = None
        print(f"WARNING: cannot write the job log {self.path}: {describe_os_error(error, self.path)}; "
              "its lines follow here", file=self.console, flush=True)

    def append_late(self, text: str) -> bool:
        """Try once more to put ``text`` into the log file (space may have been freed since, e.g. by the
        removal of a failed write's temporary file); True if it is there."""
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(text)
            return True
        except OSError:
            return False


def _excepthook(console, stream: JobLog):
    def hook(typ, value, tb):
        text = "".join(traceback.format_exception(typ, value, tb))
        try:
            line = f"{typ.__name__}: {value}"
            no_space = _no_space_error(value)
            if no_space is not None and not isinstance(no_space, DiskFullError):
                line = f"{typ.__name__}: {describe_os_error(no_space, no_space.filename or stream.path)}"
            if stream.failed is None:
                stream.write(text)  # the full traceback, into the log
                stream.flush()
            if stream.failed is None:
                print(f"ERROR: {line} (traceback: {stream.path})", file=console, flush=True)
            elif stream.append_late(text):
                print(f"ERROR: {line} (traceback: {stream.path}, written once space was freed)", file=console, flush=True)
            else:
                print(f"ERROR: {line} (the log {stream.path} could not be written; traceback:)\n{text}",
                      file=console, end="", flush=True)
        except Exception:  # noqa: BLE001 - never "Error in sys.excepthook": the console gets the traceback
            console.write(text)
            console.flush()

    return hook


# ------------------------------------------------------------------------------------- a full disk

#: errno values that mean "no room to write": a full filesystem or an exhausted quota.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(OSError):
    """No space (or quota) left while writing a named file; ``strerror`` says which and how much was free."""

    def __str__(self) -> str:
        return self.strerror


def _no_space_error(error: BaseException | None) -> OSError | None:
    """The no-space OSError in ``error``'s chain (cause or context), if any: a library may wrap it."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in NO_SPACE:
            return error
        error = error.__cause__ or error.__context__
    return None


def free_space(path: str | Path) -> str:
    """How much space is free on the filesystem that holds ``path`` (or its nearest existing folder)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        free = shutil.disk_usage(p).free
    except OSError:
        return "unknown space"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if free < 1024 or unit == "TiB":
            return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"
        free /= 1024
    return ""  # pragma: no cover - the loop always returns


def describe_os_error(error: OSError, path: str | Path | None) -> str:
    """One line for an OSError while writing ``path``: a full disk says which file and how much was free."""
    if error.errno in NO_SPACE and path is not None:
        return f"{os.strerror(error.errno)}: cannot write {path} ({free_space(path)} free there)"
    return f"{error.strerror or error}" + (f": {path}" if path is not None else "")


@contextmanager
def atomic_path(path: str | Path):
    """A temporary name beside ``path`` to write to, renamed onto ``path`` when the block succeeds.

    On any failure the temporary file is removed (a full disk leaves nothing behind), and a no-space error
    becomes a :class:`DiskFullError` naming ``path`` and the free space. Temporary files of earlier runs
    that were killed before they could clean up are removed first.
    """
    path = Path(path)
    tmp = _tmp(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            if stale != tmp and stale.name[len(path.name) + 2 : -4].isdigit():
                stale.unlink(missing_ok=True)
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        full = isinstance(e, OSError) and e.errno in NO_SPACE and not isinstance(e, DiskFullError)
        message = describe_os_error(e, path) if full else ""  # the free space before the cleanup below
        tmp.unlink(missing_ok=True)
        if full:
            raise DiskFullError(e.errno, message, str(path)) from e
        raise


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


# Python type → parquet column type, for tables that must keep their schema when they have no rows.
_ARROW_TYPES = {int: "int64", str: "string", float: "float64", bool: "bool"}


def write_parquet(df: pd.DataFrame, path: str | Path, types: Mapping[str, type] | None = None) -> None:
    """Write atomically. ``types`` (column → int / str / float / bool) fixes the columns, their order and
    their parquet types, so a table with no rows is still a typed table (pandas writes empty object
    columns as type null)."""
    schema = None
    if types is not None:
        import pyarrow as pa

        df = df.reindex(columns=list(types))
        schema = pa.schema([(c, pa.type_for_alias(_ARROW_TYPES[t])) for c, t in types.items()])
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, schema=schema)


def write_json(obj: object, path: str | Path) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


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
