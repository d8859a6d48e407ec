"""Operations on a real tiny run: precise invalidation (dry runs) and kill-and-resume with identical tables.

One real DAG run (~1.5 min on 2 cores) is shared by the module; every other check is a dry run of it,
except the resume test, which kills a second real run mid-trace.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_tiny_model_dir
from workflow_run import child_env, planned_jobs, snakemake, snakemake_cmd, tiny_config, write_config

pytestmark = pytest.mark.slow

T2T = Path("results/tiny/t2t")
UPSTREAM = {"download_known", "validate_known", "prepare_model", "noise_std", "filter_known"}
# Report stage (workflow/rules/report.smk): downstream of merge; report_config renders the whole config,
# so it reruns on any config change.
REPORT = {"qc", "prompts", "panels", "peaks", "compare", "report_config"}


def assert_jobs(jobs: dict[str, int], required: dict[str, int], out: str, allowed: set[str] = REPORT | {"all"}) -> None:
    """Exactly the required jobs, plus possibly report-stage jobs; never anything else."""
    assert {k: jobs.get(k) for k in required} == required, out[-3000:]
    assert set(jobs) - set(required) <= allowed, (set(jobs) - set(required), out[-3000:])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def completed_run(tmp_path_factory, model_dir) -> Path:
    run = tmp_path_factory.mktemp("run")
    write_config(run / "config.yaml", tiny_config(model_dir))
    r = snakemake(run, "--cores", "2")
    assert r.returncode == 0, r.stderr[-4000:]
    return run


def dry_run(run: Path, cfg: dict) -> tuple[dict[str, int], str]:
    write_config(run / "changed.yaml", cfg)
    r = snakemake(run, "--dry-run", "--cores", "2", configfile="changed.yaml")
    assert r.returncode == 0, r.stderr[-4000:]
    return planned_jobs(r.stdout), r.stdout


def test_completed_run_is_up_to_date(completed_run, model_dir):
    jobs, out = dry_run(completed_run, tiny_config(model_dir))
    assert jobs == {}, out[-2000:]


def trace_shards(out: str) -> list[int]:
    return sorted(int(s) for s in re.findall(r"wildcards: model=tiny, modality=t2t, shard=(\d+)", out))


@pytest.mark.parametrize("change", [
    {"noise": {"samples": 3}},
    {"noise": {"seed": 1}},
    {"noise": {"multiple": 2.0}},
    {"window": 1},
    {"max_prompt_tokens": 100},
    {"answer": "attribute_full"},
], ids=["samples", "seed", "multiple", "window", "max_prompt_tokens", "answer"])
def test_noise_and_window_rerun_every_trace_shard_merge_figures_only(completed_run, model_dir, change):
    jobs, out = dry_run(completed_run, tiny_config(model_dir, trace=change))
    assert_jobs(jobs, {"trace": 3, "merge": 1, "figures": 1, "all": 1}, out)
    assert trace_shards(out) == [0, 1, 2], "every trace shard"
    assert not UPSTREAM & set(jobs)


def test_raising_max_prompts_schedules_only_the_new_shards(completed_run, model_dir):
    """Shard i is a fixed block of the selected known_ids: prompts 4 and 5 are new shards 3 and 4."""
    jobs, out = dry_run(completed_run, tiny_config(model_dir, trace={"max_prompts": 5}))
    assert_jobs(jobs, {"trace": 2, "merge": 1, "figures": 1, "all": 1}, out)
    assert trace_shards(out) == [3, 4]


def test_lowering_max_prompts_reruns_no_shard(completed_run, model_dir):
    jobs, out = dry_run(completed_run, tiny_config(model_dir, trace={"max_prompts": 2}))
    assert_jobs(jobs, {"merge": 1, "figures": 1, "all": 1}, out)


@pytest.mark.parametrize("change", [{"trace": {"max_rows": 7}}, {"trace": {"max_rows": None}}, {"filter": {"batch_size": 1}}],
                         ids=["max_rows", "max_rows-auto", "filter-batch_size"])
def test_speed_only_settings_schedule_nothing(completed_run, model_dir, change):
    jobs, out = dry_run(completed_run, tiny_config(model_dir, **change))
    assert jobs == {}, out[-3000:]


def test_max_new_tokens_reruns_filter_and_downstream(completed_run, model_dir):
    jobs, out = dry_run(completed_run, tiny_config(model_dir, filter={"max_new_tokens": 4}))
    # The filter is a checkpoint: its shards are added to the DAG once it has run again (they are
    # older than the new known.parquet, so all of them rerun), hence no 'trace' in the dry run.
    assert_jobs(jobs, {"filter_known": 1, "merge": 1, "figures": 1, "all": 1}, out)
    assert "checkpoint filter_known" in out
    assert not (UPSTREAM - {"filter_known"}) & set(jobs)


def test_adding_a_model_runs_only_that_models_jobs(completed_run, model_dir):
    cfg = tiny_config(model_dir)
    cfg["models"].append({"name": "tiny2", "path": str(model_dir), "dtype": "float32"})
    jobs, out = dry_run(completed_run, cfg)
    assert_jobs(jobs, {"prepare_model": 1, "noise_std": 1, "filter_known": 1, "merge": 1, "figures": 1, "all": 1}, out)
    assert "tiny2" in out and "wildcards: model=tiny," not in out


def test_speech_settings_do_not_rerun_text_jobs(completed_run, model_dir):
    jobs, out = dry_run(completed_run, tiny_config(model_dir, speech={"align": {"use": "whisper"}}))
    assert set(jobs) <= {"report_config", "all"}, out[-3000:]


def test_expect_answer_flag_to_trace_reruns_no_shard(completed_run, model_dir):
    """Both modes trace the same prompts; only the summary and the pages change."""
    jobs, out = dry_run(completed_run, tiny_config(model_dir, filter={"expect_answer": "trace"}))
    assert_jobs(jobs, {"merge": 1, "figures": 1, "prompts": 1, "all": 1}, out)
    assert not ({"trace"} | UPSTREAM) & set(jobs)


def test_figure_format_reruns_figures_only(completed_run, model_dir):
    jobs, out = dry_run(completed_run, tiny_config(model_dir, figures={"formats": ["png", "svg"]}))
    assert_jobs(jobs, {"figures": 1, "all": 1}, out)
    assert not ({"trace", "merge"} | UPSTREAM) & set(jobs)


def _wait_for(cond, timeout: float, proc: subprocess.Popen) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"snakemake ended (rc {proc.returncode}) before the condition held")
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for the run to reach the trace stage")
        time.sleep(0.2)


def test_killed_run_resumes_to_identical_tables(completed_run, tmp_path):
    """SIGKILL the whole snakemake process group while a trace shard runs, then --rerun-incomplete."""
    run = tmp_path / "run"
    shutil.copytree(completed_run, run, ignore=shutil.ignore_patterns("changed.yaml"))
    # Keep data, model, filter and noise; everything from the trace stage on must be recomputed.
    shutil.rmtree(run / T2T / "shards")
    shutil.rmtree(run / T2T / "figures")
    for name in ("ie_per_prompt", "category_ie", "aie", "quarantine"):
        (run / T2T / f"{name}.parquet").unlink()
    (run / T2T / "summary.json").unlink()
    shutil.rmtree(run / "results" / "logs" / "trace")
    shards = run / T2T / "shards"
    logs = run / "results" / "logs" / "trace"

    proc = subprocess.Popen(snakemake_cmd(run, "--cores", "2"), cwd=run, env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # A second shard's job has started (its log exists) after the first shard was written.
        _wait_for(lambda: len(list(shards.glob("[0-9].parquet"))) >= 1 and len(list(logs.glob("*.log"))) >= 2,
                  timeout=300, proc=proc)
        time.sleep(1.0)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = sorted(shards.glob("[0-9].parquet"))
    assert 1 <= len(done) < 3, "the kill should land mid-trace"
    for p in done:  # atomic writes: whatever is there is complete
        pd.read_parquet(p)

    unlock = snakemake(run, "--unlock")  # SIGKILL leaves the lock behind
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    r = snakemake(run, "--cores", "2", "--rerun-incomplete")
    assert r.returncode == 0, r.stderr[-4000:]
    assert "trace" in r.stderr

    for name in ("ie_per_prompt", "aie"):
        want = pd.read_parquet(completed_run / T2T / f"{name}.parquet")
        got = pd.read_parquet(run / T2T / f"{name}.parquet")
        pd.testing.assert_frame_equal(got, want, check_exact=True)
    ie = pd.read_parquet(run / T2T / "ie_per_prompt.parquet")
    known = pd.read_parquet(run / T2T / "known.parquet")
    assert sorted(ie["known_id"].unique()) == sorted(known["known_id"].iloc[:3])
    assert not ie.duplicated(["known_id", "kind", "token_index", "layer"]).any()
    assert not list(shards.glob(".*.tmp")), "a finished run leaves no temporary files"
