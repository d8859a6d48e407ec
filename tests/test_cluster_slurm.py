"""The tiny DAG on a real one-node Slurm cluster, submitted with workflow/profiles/slurm through the real
snakemake-executor-plugin-slurm (sbatch, sacct via slurmdbd, scancel).

`make test-cluster` installs the Debian packages (slurm-wlm, slurmdbd, munge, mariadb-server) and runs
this module with CROSSTRACE_TEST_CLUSTER=1; tests/slurm_cluster.py starts and stops the daemons. Checks:
the tables equal a local run's; a trace job killed with scancel fails the run, and running the same
command again completes it with the same tables; a trace job requeued with `scontrol requeue` in the
middle of its shard (as a preemption requeues it) runs again and resumes after the prompts it finished.
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
from conftest import ROOT, make_tiny_model_dir
from long_prompts import checkpoint_entries, write_facts_csv
from slurm_cluster import ForeignSlurmConfig, SlurmCluster, missing_binaries
from workflow_run import child_env, copy_to_retrace, snakemake, snakemake_cmd, tiny_config, write_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("CROSSTRACE_TEST_CLUSTER") != "1",
                       reason="real Slurm cluster test: run `make test-cluster` (installs Slurm with apt, needs root)"),
    pytest.mark.skipif(bool(missing_binaries()), reason=f"Slurm test binaries missing ({' '.join(missing_binaries())}): "
                       "`make test-cluster` installs them with apt (root)"),
]

PROFILE = ROOT / "workflow" / "profiles" / "slurm"
T2T = Path("results/tiny/t2t")
TABLES = ["data/records.parquet", "data/quarantine.parquet", "tiny/t2t/known.parquet", "tiny/t2t/ie_per_prompt.parquet",
          "tiny/t2t/category_ie.parquet", "tiny/t2t/aie.parquet", "tiny/t2t/quarantine.parquet", "tables/peaks.parquet"]
# The first status check after a submission comes after this many seconds (plugin default 40): a speed setting of the
# test, not part of the profile.
FAST_STATUS = ["--slurm-init-seconds-before-status-checks", "5"]


def assert_same_tables(a: Path, b: Path) -> None:
    for t in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(a / "results" / t), pd.read_parquet(b / "results" / t),
                                      check_exact=True, obj=t)


def debug_logs(workdir: Path) -> str:
    files = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log")) + sorted((workdir / "results" / "logs").rglob("*.log"))
    return "\n".join(f"== {p}\n{p.read_text(errors='replace')[-1500:]}" for p in files
                     if "rror" in p.read_text(errors="replace"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.__enter__()
    except ForeignSlurmConfig as e:
        pytest.skip(str(e))
    try:
        yield c
    finally:
        c.__exit__()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, model_dir) -> Path:
    d = tmp_path_factory.mktemp("local")
    write_config(d / "config.yaml", tiny_config(model_dir))
    r = snakemake(d, "--cores", "2")
    assert r.returncode == 0, r.stderr[-4000:]
    return d


def slurm_env(cluster: SlurmCluster) -> dict:
    return {**child_env(), "SLURM_CONF": cluster.env["SLURM_CONF"], "PATH": cluster.env["PATH"]}


def slurm_snakemake(cluster: SlurmCluster, workdir: Path, *args: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    cmd = snakemake_cmd(workdir, "--profile", str(PROFILE), *FAST_STATUS, *args)
    return subprocess.run(cmd, cwd=workdir, env=slurm_env(cluster), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory, cluster, model_dir) -> tuple[Path, float]:
    d = tmp_path_factory.mktemp("slurm-run")
    write_config(d / "config.yaml", tiny_config(model_dir))
    t0 = time.monotonic()
    r = slurm_snakemake(cluster, d)
    seconds = time.monotonic() - t0
    assert r.returncode == 0, f"{r.stderr[-5000:]}\n{debug_logs(d)}"
    print(f"\nSlurm run of the tiny DAG: {seconds:.0f} s")
    return d, seconds


def test_slurm_run_submits_every_job_and_matches_a_local_run(cluster, slurm_run, local_run):
    d, _ = slurm_run
    assert_same_tables(d, local_run)
    done = cluster.accounting()
    comments = sorted(j["comment"] for j in done)
    # One sbatch job per rule, except the profile's groups: download + validate, merge + figures.
    assert comments == sorted([
        "rule_data_download_known_validate_known", "rule_prepare_model_wildcards_tiny",
        "rule_filter_known_wildcards_tiny_t2t", "rule_noise_std_wildcards_tiny_t2t",
        *(f"rule_trace_wildcards_tiny_t2t_{i}" for i in range(3)), "rule_post_figures_merge",
        "rule_prompts_wildcards_tiny_t2t", "rule_report_qc", "rule_report_panels", "rule_report_peaks", "rule_report_report_config"]), comments
    assert {j["state"] for j in done} == {"COMPLETED"}, done


def test_scancel_fails_the_job_and_a_rerun_completes_it(cluster, slurm_run, local_run, tmp_path):
    src, _ = slurm_run
    run = copy_to_retrace(src, tmp_path / "run", T2T)
    shutil.rmtree(run / T2T / "figures")

    # --retries 0: with the profile's retries, Snakemake would resubmit the cancelled job within this run.
    cmd = snakemake_cmd(run, "--profile", str(PROFILE), *FAST_STATUS, "--retries", "0")
    proc = subprocess.Popen(cmd, cwd=run, env=slurm_env(cluster), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    cancelled = None
    try:
        end = time.monotonic() + 900
        while cancelled is None and time.monotonic() < end and proc.poll() is None:
            running = [j for j in cluster.jobs() if j["comment"].startswith("rule_trace") and j["state"] == "RUNNING"]
            if running:
                cancelled = running[0]
                cluster.run_client(["scancel", cancelled["id"]])
            time.sleep(0.5)
        try:
            out, _ = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # Ctrl-C: Snakemake cancels its remaining jobs
            out, _ = proc.communicate(timeout=300)
            pytest.fail(f"Snakemake did not notice the cancelled job {cancelled} within 10 min:\n{out[-3000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert cancelled is not None, "no trace job was seen running"
    assert proc.returncode != 0, out[-3000:]
    state = {j["id"]: j["state"] for j in cluster.accounting()}[cancelled["id"]]
    assert state.startswith("CANCELLED"), state
    assert "CANCELLED" in out and cancelled["id"] in out, out[-3000:]
    shard = cancelled["comment"].rsplit("_", 1)[1]  # the plugin's comment: rule_trace_wildcards_tiny_t2t_<shard>
    assert not (run / T2T / "shards" / f"{shard}.parquet").exists(), "the cancelled shard left no output"

    r = slurm_snakemake(cluster, run)
    assert r.returncode == 0, f"{r.stderr[-5000:]}\n{debug_logs(run)}"
    assert (run / T2T / "shards" / f"{shard}.parquet").exists()
    assert_same_tables(run, local_run)
    again = slurm_snakemake(cluster, run, "--dry-run")
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.fixture(scope="module")
def long_local_run(tmp_path_factory, model_dir) -> Path:
    """One 5-prompt shard of long prompts (tests/long_prompts.py), traced locally up to the merged tables. One
    row per batch and 4 noise draws make each prompt take seconds, so the requeue lands inside the shard."""
    d = tmp_path_factory.mktemp("long-local")
    cfg = tiny_config(model_dir, data={"source": str(write_facts_csv(d / "facts.csv")), "limit": None},
                      trace={"max_prompts": None, "shard_size": 5, "max_prompt_tokens": None, "max_rows": 1,
                             "noise": {"samples": 4}})
    write_config(d / "config.yaml", cfg)
    r = snakemake(d, "--cores", "2", str(T2T / "ie_per_prompt.parquet"))
    assert r.returncode == 0, r.stderr[-4000:]
    return d


def test_a_requeued_trace_job_resumes_after_its_finished_prompts(cluster, long_local_run, tmp_path):
    """`scontrol requeue` of the running trace job (what a preemption with PreemptMode=REQUEUE does): Slurm
    stops it (SIGTERM) and runs it again under the same job id; the job's checkpoint (crosstrace.resume)
    keeps the prompts it had finished, the rerun traces only the others, and Snakemake, still running,
    takes the job's completion as it comes."""
    run = copy_to_retrace(long_local_run, tmp_path / "run", T2T)
    log = run / "results" / "logs" / "trace" / "tiny_t2t_0.log"
    log.unlink()
    ids = pd.read_parquet(run / T2T / "known.parquet")["known_id"].tolist()

    # trace=2 threads, as the local run's (--cores 2): the thread count can change the last bits of a product.
    cmd = snakemake_cmd(run, "--profile", str(PROFILE), str(T2T / "ie_per_prompt.parquet"), *FAST_STATUS,
                        "--set-threads", "trace=2")
    proc = subprocess.Popen(cmd, cwd=run, env=slurm_env(cluster), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    requeued = None
    try:
        end = time.monotonic() + 900
        while requeued is None and time.monotonic() < end and proc.poll() is None:
            running = [j for j in cluster.jobs() if j["comment"].startswith("rule_trace") and j["state"] == "RUNNING"]
            if running and len(checkpoint_entries(run / T2T / "shards")) >= 2:  # two prompts done, the third under way
                requeued = running[0]
                cluster.run_client(["scontrol", "requeue", requeued["id"]])
            time.sleep(0.2)
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert requeued is not None, f"no trace job was seen running with two prompts finished:\n{out[-3000:]}"
    assert proc.returncode == 0, f"{out[-4000:]}\n{debug_logs(run)}"
    history = cluster.run_client(["sacct", "-D", "-X", "-n", "-P", "-j", requeued["id"], "-o", "State"]).stdout.split()
    assert "REQUEUED" in history and history[-1] == "COMPLETED", history

    text = log.read_text()
    m = re.search(r"resuming from \S+: (\d) of 5 prompts finished before \(known_id \[([\d, ]+)\]\)", text)
    assert m, text[-3000:]
    finished = [int(i) for i in m.group(2).split(",")]
    assert 2 <= int(m.group(1)) < 5 and finished == sorted(ids[: len(finished)]), "requeued inside the shard"
    after = [int(i) for i in re.findall(r"known_id (\d+): answer ", text[m.end():])]
    assert after == ids[len(finished):], "the requeued job traced only the prompts not finished before"
    for name in ("ie_per_prompt", "aie"):
        pd.testing.assert_frame_equal(pd.read_parquet(run / T2T / f"{name}.parquet"),
                                      pd.read_parquet(long_local_run / T2T / f"{name}.parquet"), check_exact=True)
