"""Running the real Snakefile from tests: a tiny config, a subprocess runner and a dry-run job parser."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

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


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env.update(OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def snakemake_cmd(workdir: Path, *args: str, configfile: str = "config.yaml") -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir),
            "--configfile", str(workdir / configfile), *args]


def snakemake(workdir: Path, *args: str, configfile: str = "config.yaml", timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(workdir, *args, configfile=configfile), cwd=workdir, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)


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
