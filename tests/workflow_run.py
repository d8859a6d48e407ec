"""Running the real Snakefile from tests: a tiny config, a subprocess runner and a dry-run job parser."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"

# The tiny model knows no facts, hence require_known: false.
TINY_CONFIG = {
    "results": "results",
    "data": {"limit": 6},
    "models": [{"name": "tiny", "path": None}],
    "filter": {"require_known": False, "max_new_tokens": 3},
    "trace": {"window": 2, "noise": {"samples": 2}, "max_prompts": 3, "shard_size": 1},
    "figures": {"formats": ["png"]},
    "speech": {"enabled": False},  # text side only: these tests are about the DAG, not TTS/Whisper
}


def tiny_config(model_path: str | Path, **sections) -> dict:
    """TINY_CONFIG for ``model_path``; keyword arguments replace or deep-update top-level sections."""
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["models"][0]["path"] = str(model_path)
    return _with(cfg, sections)


def demo_config(model_path: str | Path, **sections) -> dict:
    """The repository's config.yaml (the demo) with its model swapped for the tiny one and the sizes of
    TINY_CONFIG, so a test runs the demo's settings in minutes; keyword arguments as in tiny_config."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    small = copy.deepcopy(TINY_CONFIG)
    small["models"][0]["path"] = str(model_path)
    small.pop("figures")  # keep the demo's figure settings
    return _with(_with(cfg, small), sections)


# The shared finished run (conftest fixture ``demo_run``): config.yaml's settings (demo_config) with the tiny Llama
# ("tiny", T→T) and the tiny SpiritLM ("spirit", T→T and S→T) for SmolLM2, real piper + Whisper base speech for
# the first two records, bootstrap CIs, a paired comparison tiny vs spirit T→T and the text-vs-speech similarity.
DEMO_RUN_MODELS = [("tiny", "t2t"), ("spirit", "t2t"), ("spirit", "s2t")]
DEMO_RUN = {
    "trace": {"max_prompts": 4, "shard_size": 2},  # the demo's: two full shards per T→T run
    "figures": {"mask_ci_zero": True},
    # piper at a third of its speed: the tiny SpiritLM's tokenizer spells most words letter by letter and each
    # letter needs a speech unit of its own, which words without their pauses (pause_owner: none) do not have
    # at normal speed ("owned": 5 letters in 0.19 s; a real Llama tokenizer writes it as one token)
    "speech": {"enabled": True, "max_prompts": 2, "tts": {"options": {"length_scale": 3.0}}},
    "stats": {"n_boot": 200, "seed": 7, "level": 0.9, "n_perm": 500, "alpha": 0.05,
              "compare": [{"a": {"model": "tiny", "modality": "t2t"}, "b": {"model": "spirit", "modality": "t2t"}}],
              "similarity": {"n_random": 3, "n_boot": 50}},
}


def demo_run_config(tiny: str | Path, spirit: str | Path, **sections) -> dict:
    """The config of the shared ``demo_run`` for the tiny model folder and the tiny SpiritLM root;
    keyword arguments change it as in tiny_config (dry-run tests: which jobs a change reruns)."""
    cfg = demo_config(tiny, **copy.deepcopy(DEMO_RUN))
    cfg["models"].append({"name": "spirit", "family": "spiritlm", "path": str(spirit), "modalities": ["t2t", "s2t"],
                          "dtype": "float32"})
    return _with(cfg, copy.deepcopy(sections))


def _with(cfg: dict, sections: dict) -> dict:
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            _deep_update(cfg[key], value)
        else:
            cfg[key] = value
    return cfg


def _deep_update(d: dict, u: dict) -> None:
    for k, v in u.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            _deep_update(d[k], v)
        else:
            d[k] = v


def copy_to_retrace(run: str | Path, dest: Path, t2t: str | Path) -> Path:
    """A copy of the finished run folder ``run`` at ``dest`` (without Snakemake's metadata) whose T→T run
    ``t2t`` (relative to the folder) must be traced again: its shards, merged tables and summary removed."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns(".snakemake"))
    shutil.rmtree(dest / t2t / "shards")
    for name in ("ie_per_prompt", "category_ie", "aie", "quarantine"):
        (dest / t2t / f"{name}.parquet").unlink()
    (dest / t2t / "summary.json").unlink()
    return dest


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env.update(OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def snakemake_cmd(workdir: Path, *args: str, configfile: str | Path = "config.yaml") -> list[str]:
    """The real Snakefile on ``workdir``; ``configfile`` is relative to it unless absolute."""
    return [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir),
            "--configfile", str(workdir / configfile), *args]


def snakemake(workdir: Path, *args: str, configfile: str | Path = "config.yaml", timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(workdir, *args, configfile=configfile), cwd=workdir, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)


def failed_logs(workdir: Path) -> str:
    """The tails of the run's job logs that hold an error: what a failed run's assertion message shows."""
    logs = sorted((Path(workdir) / "results" / "logs").rglob("*.log"))
    return "\n".join(f"== {p}\n{p.read_text(errors='replace')[-3000:]}" for p in logs
                     if "Error" in p.read_text(errors="replace") or "Traceback" in p.read_text(errors="replace"))


def run_to_completion(workdir: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """``snakemake *args`` on ``workdir`` that must succeed; on failure the test fails with the console's and
    the failed jobs' logs."""
    r = snakemake(workdir, *args, timeout=timeout)
    if r.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-6000:]}\n{failed_logs(workdir)}")
    return r


def report_results(report: Path) -> dict[str, dict]:
    """The results embedded in a `snakemake --report` HTML file: path → entry (name, caption, data_uri, ...)."""
    raw = Path(report).read_text(encoding="utf-8")
    start = raw.index("var results = {") + len("var results = ")
    return json.JSONDecoder().raw_decode(raw, start)[0]


def report_file(entry: dict) -> bytes:
    """The bytes of one embedded result (its base64 data URI decoded)."""
    return base64.b64decode(entry["data_uri"].split("base64,", 1)[1])


def planned_jobs(output: str) -> dict[str, int]:
    """Rule → job count from the first 'Job stats' table of a dry run ({} when nothing is to be done)."""
    m = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal\s+\d+", output, re.S)
    if not m:
        return {}
    return {rule: int(n) for rule, n in (line.split() for line in m.group(1).strip().splitlines())}
