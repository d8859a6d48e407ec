"""Profiles: the slurm profile dry-runs without a cluster, asks for GPUs only for cuda models, names real rules."""

from __future__ import annotations

import re

import pytest
import yaml
from workflow_run import ROOT, snakemake, tiny_config, write_config

PROFILES = ROOT / "workflow" / "profiles"
SLURM = PROFILES / "slurm"
RULE_TEXT = "\n".join(p.read_text() for p in [ROOT / "Snakefile", *(ROOT / "workflow" / "rules").glob("*.smk")])
RULES = set(re.findall(r"^\s*(?:rule|checkpoint)\s+(\w+)\s*:", RULE_TEXT, re.M))  # rules inside if-blocks too
SPEECH_RULES = {"synthesize", "speech_qc", "align"}  # CPU rules of the speech pipeline (workflow/rules/speech.smk)
MODEL_RULES = ("trace", "filter_known", "noise_std", "speech_units", "similarity")


def load(profile: str) -> dict:
    return yaml.safe_load((PROFILES / profile / "config.yaml").read_text())


def test_slurm_profile_settings():
    p = load("slurm")
    assert p["executor"] == "slurm"
    assert p["jobs"] >= 1 and p["retries"] >= 1 and p["latency-wait"] >= 30
    assert p["rerun-incomplete"] is True
    # sacct's "CANCELLED by <uid>" is not recognised by the plugin (2.8.0): a scancel'ed job hung the run
    # (tests/test_cluster_slurm.py); squeue reports "CANCELLED".
    assert p["slurm-status-command"] == "squeue"
    named = set(p["set-resources"]) | set(p["set-threads"]) | set(p["groups"])
    assert named <= RULES, f"profile names unknown rules: {named - RULES}"
    assert RULES - {"all", "speech"} <= set(p["set-resources"]), "every rule that runs gets resources"
    # The rules decide GPU or not from the model's device; a profile value would override that for CPU models.
    for rule in MODEL_RULES:
        assert "gpu" not in p["set-resources"][rule] and "gres" not in p["set-resources"][rule]
    assert "gres" not in yaml.safe_dump(p)


def test_default_profile_settings():
    p = load("default")
    assert p["cores"] == "all" and p["rerun-incomplete"] is True and p["keep-going"] is False


@pytest.mark.parametrize("rule", MODEL_RULES)
def test_model_rules_request_gpu_from_device(rule):
    body = re.search(rf"^(?:rule|checkpoint) {rule}:\n(.*?)(?=^\S|\Z)", RULE_TEXT, re.M | re.S).group(1)
    assert re.search(r"resources:\s*\n\s*gpu=gpus,", body), f"rule {rule} does not request gpu=gpus"


def test_plugin_turns_gpu_resource_into_gpus_flag():
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Res(dict):
        __getattr__ = dict.__getitem__

    class Job:
        def __init__(self, **res):
            self.resources = Res(res)

    assert set_gres_string(Job(gpu=1)).strip() == "--gpus=1"
    assert set_gres_string(Job(gpu=0)) == ""
    assert set_gres_string(Job(gpu=1, gpu_model="a100")).strip() == "--gpus=a100:1"


def job_resources(output: str) -> dict[str, list[str]]:
    """Rule → the 'resources:' lines of its jobs in a dry run's job listing."""
    out: dict[str, list[str]] = {}
    for m in re.finditer(r"(?:rule|checkpoint) (\w+):\n(.*?)resources: ([^\n]*)", output, re.S):
        out.setdefault(m.group(1), []).append(m.group(3))
    return out


@pytest.mark.parametrize("device,gpu", [("cuda", "gpu=1"), ("cpu", "gpu=0")])
def test_slurm_profile_dry_run(tmp_path, device, gpu):
    cfg = tiny_config(tmp_path / "no-model-needed-for-a-dry-run", speech={"enabled": True})
    cfg["models"][0]["device"] = device
    write_config(tmp_path / "config.yaml", cfg)
    r = snakemake(tmp_path, "--profile", str(SLURM), "--dry-run")
    assert r.returncode == 0, r.stderr[-3000:]
    res = job_resources(r.stdout)
    for rule in ("filter_known", "noise_std"):
        assert gpu in res[rule][0], res[rule]
    assert "mem_mb=32000" in res["filter_known"][0] and "runtime=120" in res["filter_known"][0]
    assert "Group job data" in r.stdout  # download + validate (+ speech selection) share one sbatch job
    assert "gpu=" not in res["speech_select"][0]


def test_workflow_parses_without_cores(tmp_path):
    """Cluster executors, --unlock and --lint give no --cores; the rules must not need workflow.cores."""
    write_config(tmp_path / "config.yaml", tiny_config(tmp_path / "m"))
    r = snakemake(tmp_path, "--unlock")
    assert r.returncode == 0, r.stderr[-3000:]


def test_default_profile_dry_run(tmp_path):
    write_config(tmp_path / "config.yaml", tiny_config(tmp_path / "m"))
    r = snakemake(tmp_path, "--profile", str(PROFILES / "default"), "--dry-run")
    assert r.returncode == 0, r.stderr[-3000:]
