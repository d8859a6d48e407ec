"""One GPU per job on a multi-GPU machine without a cluster: device slots held by lock files.

``snakemake --resources gpu=4`` runs four GPU-declared jobs at once (each rule that loads a cuda model
declares ``resources: gpu=1``), but Snakemake does not say which device each may use, so all four would
land on ``cuda:0``. Two halves close that gap:

- In the Snakemake process of a local run, :func:`share_devices` (common.smk calls :func:`share_devices_in`)
  decides the devices the jobs share and exports them to the jobs: ``CROSSTRACE_GPUS`` if set (``0,1,2,3``,
  or device UUIDs), else the entries of ``CUDA_VISIBLE_DEVICES``, else the indices ``nvidia-smi`` lists;
  and the lock folder (``CROSSTRACE_GPU_LOCKS`` if set, else one per user in the temporary directory, so
  two runs on one machine share the slots too) as ``CROSSTRACE_GPU_SLOTS``, which only this hook sets.
- In each job, :func:`claim_for_job` runs when ``crosstrace`` is first imported (crosstrace/__init__.py),
  before torch: a job that declares ``resources: gpu=n`` takes n free devices with an exclusive ``flock``
  on one lock file each, kept open for the job's lifetime, and sets ``CUDA_VISIBLE_DEVICES`` to them. The
  kernel drops the lock when the process ends in any way (exit, exception, SIGKILL), so a crashed job's
  slot is free again at once. With every device held, it waits for one.

Cluster jobs are left alone: under the Slurm executor the Snakemake process does not call the hook, so
its jobs have no ``CROSSTRACE_GPU_SLOTS`` and keep the ``CUDA_VISIBLE_DEVICES`` Slurm sets. Standard library only: this module runs
before torch is imported.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GPUS_ENV = "CROSSTRACE_GPUS"  # the devices (set by the user, or by share_devices for the jobs)
LOCKS_ENV = "CROSSTRACE_GPU_LOCKS"  # the lock folder, if not the default
SLOTS_ENV = "CROSSTRACE_GPU_SLOTS"  # set by share_devices only: this run's jobs take slots in that folder
#: The lock files this process holds (their open files): kept open, and so locked, until the process ends.
HELD: list = []


def visible_devices(environ=os.environ) -> list[str]:
    """The devices a local run's GPU jobs share: ``CROSSTRACE_GPUS``, else ``CUDA_VISIBLE_DEVICES``, else
    what ``nvidia-smi`` lists; [] when none is known."""
    for var in (GPUS_ENV, "CUDA_VISIBLE_DEVICES"):
        if environ.get(var, "").strip():
            return [d.strip() for d in environ[var].split(",") if d.strip()]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"crosstrace-gpus-{os.getuid()}"


def share_devices(environ=os.environ) -> list[str]:
    """Snakemake process of a local run: export the devices (``CROSSTRACE_GPUS``) and the lock folder
    (``CROSSTRACE_GPU_LOCKS``) to the jobs it starts. Returns the devices ([]: none known, nothing exported)."""
    devices = visible_devices(environ)
    if devices:
        environ[GPUS_ENV] = ",".join(devices)
        environ[SLOTS_ENV] = environ.get(LOCKS_ENV) or str(default_lock_dir())
    return devices


def share_devices_in(workflow, environ=os.environ) -> list[str]:
    """The workflow's hook (workflow/rules/common.smk): :func:`share_devices` in the Snakemake process of a
    local run that executes jobs; nothing on a cluster executor, inside a cluster job, or in a dry run."""
    if workflow.is_main_process and workflow.local_exec and not workflow.dryrun:
        return share_devices(environ)
    return []


def _lock_file(folder: Path, device: str) -> Path:
    return folder / (re.sub(r"[^A-Za-z0-9_.-]", "_", device) + ".lock")


def take(devices: list[str], n: int, folder: Path, poll: float = 0.5, say=None) -> list[str]:
    """Lock ``n`` free devices of ``devices`` for this process's lifetime (waiting while fewer are free)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = min(n, len(devices))
    mine: list[str] = []
    waiting = False
    while True:
        for device in devices:
            if len(mine) == n:
                return mine
            if device in mine:
                continue
            f = open(_lock_file(folder, device), "a")  # noqa: SIM115 - stays open: the lock lives as long
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            HELD.append(f)
            mine.append(device)
        if len(mine) == n:
            return mine
        if not waiting and say:
            say(f"waiting for a free GPU: {len(devices) - len(mine)} of {devices} held by other jobs ({folder})")
            waiting = True
        time.sleep(poll)


def _job_gpus() -> int:
    """GPUs the running Snakemake script job declares (``resources: gpu=n``); 0 outside a script job."""
    job = getattr(sys.modules.get("__main__"), "snakemake", None)
    resources = getattr(job, "resources", None)
    try:
        return int(resources.get("gpu", 0) or 0) if resources is not None else 0
    except (AttributeError, TypeError, ValueError):
        return 0


def claim_for_job(environ=os.environ) -> list[str]:
    """In a GPU job of a local run (:func:`share_devices` exported the slots): take free devices and set
    ``CUDA_VISIBLE_DEVICES``. Nothing elsewhere (no slots exported, a CPU job, not a Snakemake job)."""
    folder, devices = environ.get(SLOTS_ENV), environ.get(GPUS_ENV, "")
    n = _job_gpus() if folder and devices else 0
    if n < 1 or HELD:
        return []
    say = lambda msg: print(f"crosstrace: {msg}", file=sys.stderr, flush=True)  # noqa: E731 - before logging is set up
    mine = take(devices.split(","), n, Path(folder), say=say)
    environ["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
    say(f"this job holds GPU {','.join(mine)} of {devices} (CUDA_VISIBLE_DEVICES={environ['CUDA_VISIBLE_DEVICES']})")
    return mine


__all__ = ["GPUS_ENV", "LOCKS_ENV", "SLOTS_ENV", "claim_for_job", "share_devices", "share_devices_in", "take", "visible_devices"]
