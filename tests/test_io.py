"""Script-side I/O helpers and the one shard selection used by trace and speech (crosstrace.shards)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import ROOT

from crosstrace.filtering import select_for_trace
from crosstrace.io import read_parquets, write_parquet
from crosstrace.shards import select_for_speech, select_known_ids, shard_blocks


def test_shard_blocks_are_fixed_blocks_in_order():
    assert shard_blocks([5, 3, 9, 1, 7], 2) == [[5, 3], [9, 1], [7]]
    assert shard_blocks([], 2) == [[]], "no ids: one empty shard, so merge still gets a typed table"
    with pytest.raises(ValueError, match="shard_size must be >= 1"):
        shard_blocks([1], 0)


def test_raising_the_cap_keeps_every_full_shard():
    known = pd.DataFrame({"known_id": range(20), "known": [i % 3 != 1 for i in range(20)], "status": "ok"})
    small = shard_blocks(select_for_trace(known, 4, True)["known_id"], 2)
    large = shard_blocks(select_for_trace(known, 9, True)["known_id"], 2)
    assert small == [[0, 2], [3, 5]] and large[: len(small)] == small
    assert large == [[0, 2], [3, 5], [6, 8], [9, 11], [12]]


def test_select_for_trace_keeps_traceable_rows_in_dataset_order():
    known = pd.DataFrame({"known_id": [4, 1, 8, 2], "known": [True, False, True, True],
                          "status": ["ok", "ok", "quarantined", "ok"]})
    assert select_for_trace(known, None, True)["known_id"].tolist() == [4, 2]
    assert select_for_trace(known, None, False)["known_id"].tolist() == [4, 1, 2]
    assert select_for_trace(known, 1, False)["known_id"].tolist() == [4]


def test_select_for_speech_takes_the_first_records():
    records = pd.DataFrame({"known_id": [7, 3, 5]})
    assert select_for_speech(records, 2)["known_id"].tolist() == [7, 3]
    assert select_for_speech(records, None)["known_id"].tolist() == [7, 3, 5]


def test_select_known_ids_in_the_given_order():
    df = pd.DataFrame({"known_id": [5, 3, 9], "prompt": ["a", "b", "c"]})
    assert select_known_ids(df, [9, 5])["prompt"].tolist() == ["c", "a"]
    assert select_known_ids(df, []).empty and list(select_known_ids(df, []).columns) == ["known_id", "prompt"]
    with pytest.raises(KeyError, match=r"known_id \[4\] not in the input table"):
        select_known_ids(df, [3, 4])


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
