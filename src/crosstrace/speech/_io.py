"""Script-side helpers: logging to the rule's log file, atomic parquet/JSON writes, shard selection.

Uses ``crosstrace.io`` when the package has it (main branch) and a local equivalent otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pandas as pd

try:  # pragma: no cover - depends on the branch
    from crosstrace.io import setup_logging, write_parquet  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover

    def setup_logging(log_path: str | Path | None, level: int = logging.INFO) -> logging.Logger:
        handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
        if log_path:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            stream = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
            sys.stderr = stream
            handlers = [logging.StreamHandler(stream)]
        logging.basicConfig(level=level, handlers=handlers, force=True,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return logging.getLogger("crosstrace")

    def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)


def write_json_atomic(obj: object, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def select_shard(records: pd.DataFrame, shard: int, shard_size: int) -> pd.DataFrame:
    """Rows ``[shard * shard_size, (shard + 1) * shard_size)`` of the records, in file order."""
    if shard < 0 or shard_size < 1:
        raise ValueError("shard must be >= 0 and shard_size >= 1")
    return records.iloc[shard * shard_size:(shard + 1) * shard_size].reset_index(drop=True)


def n_shards(n_records: int, shard_size: int) -> int:
    return max(1, -(-n_records // shard_size))
