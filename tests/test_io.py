"""Script-side I/O helpers (crosstrace.io): parquet reads and typed writes, and errors on the console."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
from conftest import ROOT

from crosstrace.io import read_parquets, write_parquet


def test_read_parquets_concatenates_in_order(tmp_path):
    paths = [tmp_path / f"{i}.parquet" for i in range(2)]
    write_parquet(pd.DataFrame({"x": [1, 2]}), paths[0])
    write_parquet(pd.DataFrame({"x": [3]}), paths[1])
    assert read_parquets(paths)["x"].tolist() == [1, 2, 3]
    assert read_parquets([]).empty


def test_typed_write_keeps_the_schema_of_an_empty_table(tmp_path):
    types = {"known_id": int, "prompt": str, "p": float, "ok": bool}
    write_parquet(pd.DataFrame(), tmp_path / "empty.parquet", types=types)
    write_parquet(pd.DataFrame([{"prompt": "x", "known_id": 3, "p": 0.5, "ok": True}]), tmp_path / "one.parquet", types=types)
    for name in ("empty", "one"):
        schema = pq.read_schema(tmp_path / f"{name}.parquet")
        assert schema.names == list(types)
        assert [str(schema.field(c).type) for c in types] == ["int64", "string", "double", "bool"], name
    assert pd.read_parquet(tmp_path / "one.parquet").to_dict("records") == [{"known_id": 3, "prompt": "x", "p": 0.5, "ok": True}]


def test_script_errors_reach_the_console_as_one_line(tmp_path):
    """A workflow script's uncaught error: full traceback in its log, one line on the terminal."""
    log = tmp_path / "logs" / "rule" / "job.log"
    code = ("from crosstrace.io import setup_logging\n"
            f"log = setup_logging({str(log)!r})\n"
            "log.info('only in the log')\n"
            "log.warning('a cost warning', extra={'console': True})\n"
            "raise ValueError('0 records left after validation: see results/data/quarantine.parquet')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""})
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert lines == [f"WARNING: a cost warning (log: {log})",
                     f"ERROR: ValueError: 0 records left after validation: see results/data/quarantine.parquet (traceback: {log})"]
    text = log.read_text()
    assert "only in the log" in text and "Traceback (most recent call last)" in text and "ValueError: 0 records" in text
