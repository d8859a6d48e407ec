"""Resume inside a shard through the real Snakefile: the whole run (Snakemake and its trace job) is stopped
with SIGTERM (what Slurm sends a preempted job) or SIGKILL while the one 5-prompt shard traces its third
prompt. Snakemake then takes the shard as missing, not complete; the same command again traces only the
last three prompts, and the tables equal an uninterrupted run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from long_prompts import checkpoint_entries, write_facts_csv
from workflow_run import (
    child_env,
    copy_to_retrace,
    planned_jobs,
    snakemake,
    snakemake_cmd,
    tiny_config,
    write_config,
)

pytestmark = pytest.mark.slow

T2T = Path("results/tiny/t2t")
TARGET = str(T2T / "ie_per_prompt.parquet")
LOG = Path("results/logs/trace/tiny_t2t_0.log")
ANSWER_LINE = re.compile(r"known_id (\d+): answer ")


@pytest.fixture(scope="module")
def completed(tmp_path_factory, tiny_model_dir) -> Path:
    d = tmp_path_factory.mktemp("run")
    cfg = tiny_config(tiny_model_dir, data={"source": str(write_facts_csv(d / "facts.csv")), "limit": None},
                      trace={"max_prompts": None, "shard_size": 5, "max_prompt_tokens": None})
    write_config(d / "config.yaml", cfg)
    r = snakemake(d, "--cores", "2", TARGET)
    assert r.returncode == 0, r.stderr[-4000:]
    return d


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_stopped_run_resumes_the_shard_after_its_finished_prompts(completed, tmp_path, sig):
    run = copy_to_retrace(completed, tmp_path / "run", T2T)
    (run / LOG).unlink()
    ids = pd.read_parquet(run / T2T / "known.parquet")["known_id"].tolist()
    assert len(ids) == 5

    proc = subprocess.Popen(snakemake_cmd(run, "--cores", "2", TARGET), cwd=run, env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        end = time.monotonic() + 600
        while len(checkpoint_entries(run / T2T / "shards")) < 2:  # the job traces its third prompt now
            assert proc.poll() is None, f"snakemake ended (rc {proc.returncode}) before the second prompt"
            assert time.monotonic() < end, "timed out waiting for the second prompt"
            time.sleep(0.05)
        os.killpg(proc.pid, sig)  # Snakemake and its job, as Slurm signals every process of a job
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert checkpoint_entries(run / T2T / "shards") == sorted(f"{i}.parquet" for i in ids[:2])
    assert not (run / T2T / "shards" / "0.parquet").exists()

    snakemake(run, "--unlock")  # a killed Snakemake leaves its lock behind
    dry = snakemake(run, "--dry-run", "--cores", "2", TARGET)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert planned_jobs(dry.stdout).get("trace") == 1, "the partial shard is not taken as complete"
    r = snakemake(run, "--cores", "2", "--rerun-incomplete", TARGET)
    assert r.returncode == 0, r.stderr[-4000:]

    log = (run / LOG).read_text()
    resumed = log[log.index("resuming from"):]
    assert f"2 of 5 prompts finished before (known_id {sorted(ids[:2])}), 3 to trace" in resumed
    assert [int(i) for i in ANSWER_LINE.findall(resumed)] == ids[2:], "the first two prompts are not traced again"
    shards = Path("tiny/t2t/shards")
    for name in ("0.parquet", "0.quarantine.parquet"):
        assert (run / "results" / shards / name).read_bytes() == (completed / "results" / shards / name).read_bytes()
    for name in ("ie_per_prompt", "aie"):
        pd.testing.assert_frame_equal(pd.read_parquet(run / T2T / f"{name}.parquet"),
                                      pd.read_parquet(completed / T2T / f"{name}.parquet"), check_exact=True)
    assert not (run / T2T / "shards" / ".0.checkpoint").exists()
    again = snakemake(run, "--dry-run", "--cores", "2", TARGET)
    assert "Nothing to be done" in again.stdout + again.stderr
