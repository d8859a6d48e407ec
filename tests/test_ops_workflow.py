"""Operations on the shared finished run (conftest ``demo_run``): precise invalidation (dry runs of a changed
config, which change nothing) and kill-and-resume with identical tables (on a copy of the run).
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
from conftest import copy_run
from workflow_run import child_env, demo_run_config, planned_jobs, snakemake, snakemake_cmd, write_config

pytestmark = pytest.mark.slow

T2T = Path("results/tiny/t2t")
UPSTREAM = {"download_known", "validate_known", "prepare_model", "noise_std", "filter_known"}
# The speech chain (workflow/rules/speech.smk), upstream of the S→T runs.
SPEECH = {"speech_select", "synthesize", "speech_qc", "speech_wer", "align", "align_accuracy", "speech_units"}
# Report stage (workflow/rules/report.smk): downstream of merge; report_config renders the whole config,
# so it reruns on any config change.
REPORT = {"qc", "prompts", "panels", "peaks", "compare", "report_config", "unit_view", "similarity"}
# The demo run's trace shards: trace.shard_size 2 of trace.max_prompts 4 per T→T run; 2 spoken records S→T.
ALL_SHARDS = {("tiny", "t2t"): [0, 1], ("spirit", "t2t"): [0, 1], ("spirit", "s2t"): [0]}


def assert_jobs(jobs: dict[str, int], required: dict[str, int], out: str, allowed: set[str] = REPORT | {"all"}) -> None:
    """Exactly the required jobs, plus possibly report-stage jobs; never anything else."""
    assert {k: jobs.get(k) for k in required} == required, out[-3000:]
    assert set(jobs) - set(required) <= allowed, (set(jobs) - set(required), out[-3000:])


@pytest.fixture(scope="module")
def changed(tiny_model_dir, ckpt):
    """``changed(**sections)``: the demo run's config with those sections changed (as tiny_config)."""
    return lambda **sections: demo_run_config(tiny_model_dir, ckpt["root"], **sections)


def dry_run(run: Path, cfg: dict, tmp_path: Path) -> tuple[dict[str, int], str]:
    """The jobs a dry run of ``cfg`` plans on the finished ``run`` (the config file is the test's own)."""
    write_config(tmp_path / "changed.yaml", cfg)
    r = snakemake(run, "--dry-run", "--cores", "2", configfile=tmp_path / "changed.yaml")
    assert r.returncode == 0, r.stderr[-4000:]
    return planned_jobs(r.stdout), r.stdout


def planned(out: str) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run lists, e.g. ("trace", "model=tiny, modality=t2t, shard=1")."""
    jobs = re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):\n((?:    .*\n?)*)", out, re.M)
    return {(rule, (re.findall(r"^    wildcards: (.*)$", body, re.M) or [""])[0]) for rule, body in jobs}


def trace_shards(out: str) -> dict[tuple[str, str], list[int]]:
    """(model, modality) → the trace shards a dry run schedules."""
    shards: dict[tuple[str, str], list[int]] = {}
    for m, mod, i in re.findall(r"wildcards: model=(\S+), modality=(\w+), shard=(\d+)", out):
        shards.setdefault((m, mod), []).append(int(i))
    return {k: sorted(v) for k, v in shards.items()}


def test_completed_run_is_up_to_date(demo_run, changed, tmp_path):
    jobs, out = dry_run(demo_run, changed(), tmp_path)
    assert jobs == {}, out[-2000:]


@pytest.mark.parametrize("change", [
    {"noise": {"samples": 3}},
    {"noise": {"seed": 1}},
    {"noise": {"multiple": 2.0}},
    {"window": 1},
    {"max_prompt_tokens": 100},
    {"answer": "attribute_full"},
], ids=["samples", "seed", "multiple", "window", "max_prompt_tokens", "answer"])
def test_noise_and_window_rerun_every_trace_shard_merge_figures_only(demo_run, changed, tmp_path, change):
    jobs, out = dry_run(demo_run, changed(trace=change), tmp_path)
    assert_jobs(jobs, {"trace": 5, "merge": 3, "figures": 3, "all": 1}, out)
    assert trace_shards(out) == ALL_SHARDS, "every trace shard of every run"
    assert not (UPSTREAM | SPEECH) & set(jobs)


def test_raising_max_prompts_schedules_only_the_new_shards(demo_run, changed, tmp_path):
    """Shard i is a fixed block of the selected known_ids: prompts 4 and 5 are the new shard 2 of each T→T run;
    S→T has only its two spoken records, so nothing of it is traced again."""
    jobs, out = dry_run(demo_run, changed(trace={"max_prompts": 6}), tmp_path)
    assert_jobs(jobs, {"trace": 2, "merge": 2, "figures": 2, "all": 1}, out)
    assert trace_shards(out) == {("tiny", "t2t"): [2], ("spirit", "t2t"): [2]}
    assert not {job for job in planned(out) if job[0] in ("merge", "figures") and "s2t" in job[1]}


def test_lowering_max_prompts_reruns_no_shard(demo_run, changed, tmp_path):
    jobs, out = dry_run(demo_run, changed(trace={"max_prompts": 2}), tmp_path)
    assert_jobs(jobs, {"merge": 2, "figures": 2, "all": 1}, out)
    assert {w for rule, w in planned(out) if rule == "merge"} == {"model=tiny, modality=t2t", "model=spirit, modality=t2t"}


@pytest.mark.parametrize("change", [{"trace": {"max_rows": 7}}, {"trace": {"max_rows": None}}, {"filter": {"batch_size": 1}}],
                         ids=["max_rows", "max_rows-auto", "filter-batch_size"])
def test_speed_only_settings_schedule_nothing(demo_run, changed, tmp_path, change):
    jobs, out = dry_run(demo_run, changed(**change), tmp_path)
    assert jobs == {}, out[-3000:]


def test_max_new_tokens_reruns_filter_and_downstream(demo_run, changed, tmp_path):
    jobs, out = dry_run(demo_run, changed(filter={"max_new_tokens": 4}), tmp_path)
    # The filter is a checkpoint: its shards are added to the DAG once it has run again (they are older than the
    # new known.parquet, so all of them rerun), hence no T→T 'trace' in the dry run. The S→T noise basis is the
    # units of the S→T subject spans in the known table, so its noise_std and its trace shard follow.
    assert_jobs(jobs, {"filter_known": 3, "noise_std": 1, "trace": 1, "merge": 3, "figures": 3, "all": 1}, out)
    assert "checkpoint filter_known" in out
    assert ("noise_std", "model=spirit, modality=s2t") in planned(out)
    assert trace_shards(out) == {("spirit", "s2t"): [0]}
    assert not (UPSTREAM - {"filter_known", "noise_std"} | SPEECH) & set(jobs)


def test_adding_a_model_runs_only_that_models_jobs(demo_run, changed, tiny_model_dir, tmp_path):
    cfg = changed()
    cfg["models"].append({"name": "tiny2", "path": str(tiny_model_dir), "dtype": "float32"})
    jobs, out = dry_run(demo_run, cfg, tmp_path)
    assert_jobs(jobs, {"prepare_model": 1, "noise_std": 1, "filter_known": 1, "merge": 1, "figures": 1, "all": 1}, out)
    assert {w for _, w in planned(out)} - {""} == {"model=tiny2", "model=tiny2, modality=t2t"}


def test_speech_settings_do_not_rerun_text_jobs(demo_run, changed, tmp_path):
    """speech.align.use picks which alignment S→T reads: S→T reruns from its filter on; no T→T job, and
    no speech job (both aligners ran already)."""
    jobs, out = dry_run(demo_run, changed(speech={"align": {"use": "whisper"}}), tmp_path)
    assert_jobs(jobs, {"filter_known": 1, "noise_std": 1, "trace": 1, "merge": 1, "figures": 1, "all": 1}, out)
    assert {w for _, w in planned(out)} - {""} <= {"model=spirit", "model=spirit, modality=s2t",
                                                   "model=spirit, modality=s2t, shard=0"}, out[-3000:]
    assert not (SPEECH | {"download_known", "validate_known", "prepare_model"}) & set(jobs)


def test_expect_answer_flag_to_trace_reruns_no_shard(demo_run, changed, tmp_path):
    """Both modes trace the same prompts; only the summary and the pages change."""
    jobs, out = dry_run(demo_run, changed(filter={"expect_answer": "trace"}), tmp_path)
    assert_jobs(jobs, {"merge": 3, "figures": 3, "prompts": 3, "all": 1}, out)
    assert not ({"trace"} | UPSTREAM | SPEECH) & set(jobs)


def test_figure_format_reruns_figures_only(demo_run, changed, tmp_path):
    """Every rule that draws a figure, and nothing else."""
    jobs, out = dry_run(demo_run, changed(figures={"formats": ["png", "svg"]}), tmp_path)
    assert_jobs(jobs, {"figures": 3, "all": 1}, out)
    assert not ({"trace", "merge"} | UPSTREAM | SPEECH) & set(jobs)


def _wait_for(cond, timeout: float, proc: subprocess.Popen) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"snakemake ended (rc {proc.returncode}) before the condition held")
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for the run to reach the trace stage")
        time.sleep(0.05)


def test_killed_run_resumes_to_identical_tables(demo_run, tmp_path):
    """SIGKILL the whole snakemake process group in the middle of the trace stage, then --rerun-incomplete.

    The copy's tiny T→T run is traced again, its two shard jobs one after the other (a resource of the test's
    allows one trace job at a time; each keeps its two threads, so the IEs are bitwise those of the shared run):
    the kill comes as soon as the first shard is written, and the second cannot have finished by then (a job
    needs seconds to start: Python, torch, the model)."""
    run = copy_run(demo_run, tmp_path / "run")
    # Keep data, models, filter and noise; everything of tiny T→T from the trace stage on must be recomputed.
    shutil.rmtree(run / T2T / "shards")
    shutil.rmtree(run / T2T / "figures")
    for name in ("ie_per_prompt", "category_ie", "aie", "quarantine"):
        (run / T2T / f"{name}.parquet").unlink()
    (run / T2T / "summary.json").unlink()
    for log in (run / "results" / "logs" / "trace").glob("tiny_t2t_*.log"):
        log.unlink()
    shards = run / T2T / "shards"

    one_at_a_time = ["--set-resources", "trace:trace_slot=1", "--resources", "trace_slot=1"]
    proc = subprocess.Popen(snakemake_cmd(run, "--cores", "2", *one_at_a_time), cwd=run, env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(lambda: any(shards.glob("[0-9].parquet")), timeout=900, proc=proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = sorted(shards.glob("[0-9].parquet"))
    assert len(done) == 1, f"the kill lands mid-trace: one of the two shards written, not {done}"
    pd.read_parquet(done[0])  # atomic writes: whatever is there is complete

    unlock = snakemake(run, "--unlock")  # SIGKILL leaves the lock behind
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    r = snakemake(run, "--cores", "2", "--rerun-incomplete", timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "rule trace:" in r.stderr and "wildcards: model=tiny, modality=t2t, shard=" in r.stderr

    for name in ("ie_per_prompt", "aie"):
        want = pd.read_parquet(demo_run / T2T / f"{name}.parquet")
        got = pd.read_parquet(run / T2T / f"{name}.parquet")
        pd.testing.assert_frame_equal(got, want, check_exact=True)
    ie = pd.read_parquet(run / T2T / "ie_per_prompt.parquet")
    known = pd.read_parquet(run / T2T / "known.parquet")
    assert sorted(ie["known_id"].unique()) == sorted(known["known_id"].iloc[:4])
    assert not ie.duplicated(["known_id", "kind", "token_index", "layer"]).any()
    assert not list(shards.glob(".*.tmp")), "a finished run leaves no temporary files"
