import json
import os
import subprocess
import sys

from conftest import ROOT, make_tiny_model_dir


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run([sys.executable, "-m", "crosstrace.cli", *args], capture_output=True, text=True, env=env)


def test_cli_trace_one_prompt(tmp_path):
    model = make_tiny_model_dir(tmp_path / "tiny")
    out = tmp_path / "out"
    p = _cli("trace", "--model", str(model), "--prompt", "Apple's headquarters are in", "--subject", "Apple",
             "--samples", "2", "--window", "2", "--threads", "1", "--out", str(out), "--formats", "png")
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["subject_span"][0] == 0 and "".join(summary["subject_tokens"]).strip() == "Apple"
    assert 0 <= summary["p_corrupted"] <= 1 and 0 <= summary["p_clean"] <= 1
    assert "answer" in p.stdout.splitlines()[0]
    assert sorted(f.name for f in out.iterdir()) == ["trace_attn.png", "trace_hidden.png", "trace_mlp.png"]


def test_cli_rejects_subject_not_in_prompt(tmp_path):
    p = _cli("trace", "--model", str(tmp_path), "--prompt", "Paris is in", "--subject", "Rome")
    assert p.returncode == 2 and "does not occur in prompt" in p.stderr


def test_cli_help_lists_options():
    p = _cli("trace", "--help")
    assert p.returncode == 0 and "--window" in p.stdout and "--noise-multiple" in p.stdout


def test_cli_answer_modes(tmp_path):
    p = _cli("trace", "--model", str(tmp_path), "--prompt", "Paris is in", "--subject", "Paris",
             "--answer", "attribute_full")
    assert p.returncode == 2 and "--attribute" in p.stderr
    model = make_tiny_model_dir(tmp_path / "tiny")
    p = _cli("trace", "--model", str(model), "--prompt", "Apple's headquarters are in", "--subject", "Apple",
             "--attribute", "Cupertino", "--answer", "attribute_full", "--kinds", "mlp", "--samples", "2",
             "--window", "2", "--threads", "1", "--out", str(tmp_path / "out"), "--formats", "png")
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["answer_mode"] == "attribute_full" and summary["answer"] == " Cupertino"
    assert len(summary["answer_ids"]) >= 1 and "whole attribute" in p.stdout.splitlines()[0]
