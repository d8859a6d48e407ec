"""Resume inside a trace shard (crosstrace.resume): a job killed in the middle of its third prompt (SIGTERM,
as Slurm preempts; SIGKILL) keeps its first two, a rerun traces only the other three, and the shard's
tables are byte-identical to an uninterrupted run. The checkpoint itself: atomic entries, a key that
discards it when the shard's settings or inputs change."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from long_prompts import PROMPTS, SUBJECTS, checkpoint_entries
from workflow_run import child_env

from crosstrace.io import write_json, write_parquet
from crosstrace.resume import ShardCheckpoint, checkpoint_dir, shard_key
from crosstrace.steps import prepare_model, trace_shard
from crosstrace.trace.tables import IE_COLUMNS, QUARANTINE_COLUMNS

IDS = [2, 5, 7, 11, 13]
TRACE = {"kinds": ["hidden", "mlp", "attn"], "window": 2, "engine": "fast", "max_prompt_tokens": None, "answer": "top1",
         "noise": {"samples": 2, "kind": "gaussian", "multiple": 3.0, "absolute": None, "seed": 0}}
ANSWER_LINE = re.compile(r"known_id (\d+): answer ")

# A trace job as the rule runs it (scripts/trace_shard.py): one shard, its log, its two outputs.
DRIVER = """
import json, sys
from crosstrace.io import setup_logging
from crosstrace.steps import trace_shard
a = json.loads(sys.argv[1])
log = setup_logging(a["log"])
trace_shard(a["model"], "t2t", a["trace"], a["noise"], a["known"], a["ids"], a["ie"], a["quarantine"], shard=0,
            threads=1, log=log)
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model_dir) -> dict:
    d = tmp_path_factory.mktemp("inputs")
    model = tiny_model_dir
    prepare_model({"name": "tiny", "path": str(model), "dtype": "float32"}, None, d / "model.json")
    write_json({"std": 0.1}, d / "noise.json")
    known = pd.DataFrame({"known_id": IDS, "subject": SUBJECTS, "attribute": ["French"] * 5,
                          "prompt": PROMPTS, "known": True})
    write_parquet(known, d / "known.parquet")
    return {"model": str(d / "model.json"), "noise": str(d / "noise.json"), "known": str(d / "known.parquet"),
            "trace": TRACE, "ids": IDS}


def job(inputs: dict, out: Path, log: str) -> dict:
    return {**inputs, "ie": str(out / "0.parquet"), "quarantine": str(out / "0.quarantine.parquet"), "log": str(out / log)}


def start(args: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(args)], env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def traced(log: Path) -> list[int]:
    return [int(m.group(1)) for m in ANSWER_LINE.finditer(log.read_text())]


def entries(out: Path) -> list[str]:
    return checkpoint_entries(out)


@pytest.fixture(scope="module")
def uninterrupted(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    p = start(job(inputs, out, "trace.log"))
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    assert traced(out / "trace.log") == IDS
    assert not checkpoint_dir(out / "0.parquet").exists(), "the checkpoint is removed once the shard is written"
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_in_the_third_prompt_resumes_after_the_second(inputs, uninterrupted, tmp_path, sig):
    p = start(job(inputs, tmp_path, "killed.log"))
    try:
        end = time.monotonic() + 600
        while len(entries(tmp_path)) < 2:  # the second prompt is in the checkpoint: the job traces the third
            assert p.poll() is None, f"the job ended before its second prompt: {p.stderr.read()[-3000:]}"
            assert time.monotonic() < end, "timed out waiting for the second prompt"
            time.sleep(0.05)
        p.send_signal(sig)
        p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert entries(tmp_path) == ["2.parquet", "5.parquet"], "the signal landed in the third prompt"
    assert not (tmp_path / "0.parquet").exists() and not (tmp_path / "0.quarantine.parquet").exists()
    assert traced(tmp_path / "killed.log") == IDS[:2]
    if sig == signal.SIGTERM:  # a log line says what is kept, and the job exits with 128 + 15
        assert p.returncode == 143
        assert f"SIGTERM: stopping; 2 of 5 prompts are in {checkpoint_dir(tmp_path / '0.parquet')}" in (
            tmp_path / "killed.log").read_text()
    else:
        assert p.returncode == -signal.SIGKILL

    rerun = start(job(inputs, tmp_path, "rerun.log"))
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    log = (tmp_path / "rerun.log").read_text()
    assert "2 of 5 prompts finished before (known_id [2, 5]), 3 to trace" in log
    assert traced(tmp_path / "rerun.log") == IDS[2:], "the first two prompts are not traced again"
    for name in ("0.parquet", "0.quarantine.parquet"):
        assert (tmp_path / name).read_bytes() == (uninterrupted / name).read_bytes(), name
    assert not checkpoint_dir(tmp_path / "0.parquet").exists()


# --- the checkpoint itself ------------------------------------------------------------------------------


def _rows(known_id: int, n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"known_id": [known_id] * n, "layer": range(n), "ie": [0.5 * known_id] * n})


def test_checkpoint_assembles_the_shard_in_its_order_from_finished_prompts(tmp_path):
    out = tmp_path / "shards" / "4.parquet"
    ck = ShardCheckpoint(out, "k")
    assert ck.dir == tmp_path / "shards" / ".4.checkpoint"
    ck.add(9, rows=_rows(9))
    ck.add(3, quarantined={"model": "m", "modality": "t2t", "known_id": 3, "stage": "trace", "reason": "too long"})
    ck.add(1, rows=_rows(1))
    again = ShardCheckpoint(out, "k")  # a rerun under the same key keeps them
    assert again.known_ids() == {1, 3, 9}
    todo = again.todo(pd.DataFrame({"known_id": [1, 3, 9, 4], "prompt": list("abcd")}))
    assert [r["known_id"] for r in todo] == [4]
    again.add(4, rows=_rows(4, 2))
    ie, q = again.tables([1, 3, 9, 4], ["known_id", "layer", "ie"], ["model", "modality", "known_id", "stage", "reason"])
    pd.testing.assert_frame_equal(ie, pd.concat([_rows(1), _rows(9), _rows(4, 2)], ignore_index=True))
    assert q.to_dict("records") == [{"model": "m", "modality": "t2t", "known_id": 3, "stage": "trace", "reason": "too long"}]
    again.remove()
    assert not again.dir.exists()


def test_checkpoint_of_other_settings_or_inputs_is_discarded(tmp_path, caplog):
    out = tmp_path / "0.parquet"
    ShardCheckpoint(out, "old").add(1, rows=_rows(1))
    with caplog.at_level(logging.INFO, logger="crosstrace.resume"):
        ck = ShardCheckpoint(out, "new")
    assert ck.known_ids() == set()
    assert f"checkpoint {ck.dir} discarded: written under other settings or inputs" in caplog.text
    (ck.dir / "key.json").unlink()  # killed between creating the folder and writing its key
    ck.add(2, rows=_rows(2))
    assert ShardCheckpoint(out, "new").known_ids() == set()


def test_an_interrupted_write_leaves_no_entry(tmp_path):
    ck = ShardCheckpoint(tmp_path / "0.parquet", "k")
    ck.add(1, rows=_rows(1))
    (ck.dir / ".2.parquet.4242.tmp").write_bytes(b"PAR1 half a file")  # what a kill mid-write leaves
    again = ShardCheckpoint(tmp_path / "0.parquet", "k")
    assert again.known_ids() == {1}
    assert not list(again.dir.glob(".*.tmp"))
    with pytest.raises(FileNotFoundError, match="known_id 2 has no entry in the checkpoint"):
        again.tables([1, 2], ["known_id"], ["known_id"])


def test_shard_key_changes_with_every_setting_and_input_that_decides_the_rows():
    records = pd.DataFrame({"known_id": [1, 2], "prompt": ["a", "b"]})
    base = dict(model={"name": "m", "path": "p"}, modality="t2t", trace=TRACE, noise={"std": 0.1}, known_ids=[1, 2],
                records=records)
    key = shard_key(**base)
    assert shard_key(**base) == key
    changes = {"model": {"name": "m", "path": "q"}, "modality": "s2t", "noise": {"std": 0.2}, "known_ids": [1, 2, 3],
               "trace": {**TRACE, "noise": {**TRACE["noise"], "seed": 1}},
               "records": records.assign(prompt=["a", "c"])}
    for name, value in changes.items():
        assert shard_key(**{**base, name: value}) != key, name


def test_trace_shard_discards_a_stale_checkpoint_and_traces_every_prompt(inputs, uninterrupted, tmp_path, caplog):
    out = tmp_path / "0.parquet"
    ShardCheckpoint(out, "written under another noise seed").add(2, rows=_rows(2))
    threads = torch.get_num_threads()
    try:  # one thread, as the uninterrupted job (the thread count can change the last bits)
        with caplog.at_level(logging.INFO, logger="crosstrace"):
            trace_shard(inputs["model"], "t2t", TRACE, inputs["noise"], inputs["known"], IDS[:2], out,
                        tmp_path / "0.quarantine.parquet", threads=1, log=logging.getLogger("crosstrace"))
    finally:
        torch.set_num_threads(threads)
    assert "discarded: written under other settings or inputs" in caplog.text
    assert [int(m.group(1)) for m in ANSWER_LINE.finditer(caplog.text)] == IDS[:2]
    want = pd.read_parquet(uninterrupted / "0.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(out), want[want["known_id"].isin(IDS[:2])], check_exact=True)
    assert set(IE_COLUMNS) == set(want.columns) and QUARANTINE_COLUMNS == list(pd.read_parquet(tmp_path / "0.quarantine.parquet").columns)
