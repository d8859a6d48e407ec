"""One device per GPU job on one machine (crosstrace.devices): a real Snakemake DAG of six GPU-declared jobs
with `--resources gpu=2` and a fake device list; from the jobs' own logs, no two jobs that overlapped in time
saw the same device, a killed job's device is taken again, and a CPU job takes none. Plus the pieces: which
devices, the locks, what the hook exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from workflow_run import child_env

from crosstrace import devices
from crosstrace.devices import (
    GPUS_ENV,
    LOCKS_ENV,
    SLOTS_ENV,
    claim_for_job,
    share_devices_in,
    take,
    visible_devices,
)

SNAKEFILE = """
from crosstrace.devices import share_devices_in

share_devices_in(workflow)  # the hook of workflow/rules/common.smk


rule all:
    input:
        expand("out/gpu_{i}.txt", i=range(6)),
        "out/cpu.txt",


rule gpu_job:
    output:
        "out/gpu_{i}.txt",
    log:
        "logs/gpu_{i}.json",
    wildcard_constraints:
        i="[01345]",
    resources:
        gpu=1,
    script:
        "job.py"


# The job that is killed holding its device: first in line, so that jobs are still waiting for a device when
# it dies (scheduled last, no job would be left to take its device again)
rule gpu_job_killed:
    output:
        "out/gpu_2.txt",
    log:
        "logs/gpu_2.json",
    priority: 1
    resources:
        gpu=1,
    script:
        "job.py"


rule cpu_job:
    output:
        "out/cpu.txt",
    log:
        "logs/cpu.json",
    script:
        "job.py"
"""

# What every job records in its own log: the device it saw (CUDA_VISIBLE_DEVICES after `import crosstrace`,
# as the workflow's scripts import it first) and when it held it. gpu_2 is killed (SIGKILL) while it holds one.
JOB = """
import crosstrace  # noqa: F401 - a GPU job takes its device here
import json, os, signal, time

start = time.time()
gpu = snakemake.rule.startswith("gpu_job")
rec = {"job": "gpu_job_" + snakemake.wildcards.get("i", "2") if gpu else snakemake.rule + "_",
       "device": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start}
if snakemake.rule == "gpu_job_killed":
    rec["end"] = time.time()
    open(snakemake.log[0], "w").write(json.dumps(rec))
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(1.5)  # the job's work: long enough that two jobs overlap
rec["end"] = time.time()
open(snakemake.log[0], "w").write(json.dumps(rec))
open(snakemake.output[0], "w").write("done")
"""


@pytest.mark.slow
def test_six_gpu_jobs_on_two_devices_never_share_one_and_a_killed_jobs_device_is_reused(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "job.py").write_text(JOB)
    env = {k: v for k, v in child_env().items() if k not in ("CUDA_VISIBLE_DEVICES", SLOTS_ENV)}
    env.update({GPUS_ENV: "7,9", LOCKS_ENV: str(tmp_path / "locks")})
    r = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "4", "--resources", "gpu=2", "--keep-going"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "gpu_job" in r.stderr, "the killed job fails the run"  # --keep-going: the rest ran
    jobs = {j["job"]: j for j in (json.loads(p.read_text()) for p in (tmp_path / "logs").glob("*.json"))}
    assert sorted(jobs) == ["cpu_job_", *(f"gpu_job_{i}" for i in range(6))], r.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cpu.txt", *(f"gpu_{i}.txt" for i in (0, 1, 3, 4, 5))]

    assert jobs.pop("cpu_job_")["device"] is None, "a CPU job takes no device"
    assert {j["device"] for j in jobs.values()} == {"7", "9"}
    for a in jobs.values():
        for b in jobs.values():
            if a is not b and a["start"] < b["end"] and b["start"] < a["end"]:
                assert a["device"] != b["device"], (a, b)
    overlapping = [(a, b) for a in jobs.values() for b in jobs.values() if a["job"] < b["job"]
                   and a["start"] < b["end"] and b["start"] < a["end"]]
    assert overlapping, "two GPU jobs ran at once"
    killed = jobs["gpu_job_2"]
    later = [j for j in jobs.values() if j["start"] > killed["end"] and j["device"] == killed["device"]]
    assert later, f"no job took device {killed['device']} again after gpu_job_2 was killed holding it: {jobs}"


# --- the pieces -----------------------------------------------------------------------------------------------


def test_devices_come_from_crosstrace_gpus_then_cuda_visible_devices_then_nvidia_smi(tmp_path, monkeypatch):
    assert visible_devices({GPUS_ENV: "2, 3", "CUDA_VISIBLE_DEVICES": "0,1"}) == ["2", "3"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "GPU-1a2b,GPU-3c4d"}) == ["GPU-1a2b", "GPU-3c4d"]
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0\\n1\\n2\\n3\\n'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert visible_devices({}) == ["0", "1", "2", "3"]
    monkeypatch.setenv("PATH", "/nonexistent")
    assert visible_devices({}) == []


def _workflow(local=True, main=True, dry=False):
    return SimpleNamespace(local_exec=local, is_main_process=main, dryrun=dry)


def test_the_hook_exports_slots_only_for_a_local_run_that_executes_jobs(tmp_path, monkeypatch):
    env = {GPUS_ENV: "0,1", LOCKS_ENV: str(tmp_path)}
    assert share_devices_in(_workflow(), env) == ["0", "1"]
    assert env[SLOTS_ENV] == str(tmp_path) and env[GPUS_ENV] == "0,1"
    for wf in (_workflow(local=False), _workflow(main=False), _workflow(dry=True)):  # slurm executor, a cluster job, -n
        env = {GPUS_ENV: "0,1"}
        assert share_devices_in(wf, env) == [] and SLOTS_ENV not in env
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi
    env = {}
    assert share_devices_in(_workflow(), env) == [] and env == {}  # no device known: nothing exported


@pytest.fixture
def held(monkeypatch):
    """This test's locks, released at its end (the job's are released when its process ends)."""
    files: list = []
    monkeypatch.setattr(devices, "HELD", files)
    yield files
    for f in files:
        f.close()


def test_take_locks_free_devices_and_a_closed_lock_frees_its_device(tmp_path, held):
    assert take(["a", "b"], 1, tmp_path) == ["a"]
    assert take(["a", "b"], 1, tmp_path) == ["b"]  # "a" is held (flock: per open file, even in one process)
    said = []
    held.pop(0).close()  # the job holding "a" ends
    assert take(["a", "b"], 1, tmp_path, poll=0.01, say=said.append) == ["a"]
    assert said == []


def test_claim_does_nothing_outside_a_gpu_job_of_a_local_run(tmp_path, held):
    env = {GPUS_ENV: "0,1", SLOTS_ENV: str(tmp_path)}
    assert claim_for_job(env) == []  # pytest is no Snakemake job: no resources.gpu
    assert "CUDA_VISIBLE_DEVICES" not in env
    assert claim_for_job({GPUS_ENV: "0,1"}) == []  # no slots exported (a Slurm job, or no hook)
