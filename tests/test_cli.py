import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "crosstrace.cli", *args], capture_output=True, text=True, env=env)


def test_cli_trace_one_prompt(tmp_path, tiny_model_dir):
    model = tiny_model_dir
    out = tmp_path / "out"
    p = _cli("trace", "--model", str(model), "--prompt", "Apple's headquarters are in", "--subject", "Apple",
             "--samples", "2", "--window", "2", "--threads", "1", "--out", str(out), "--formats", "png")
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["subject_span"][0] == 0 and "".join(summary["subject_tokens"]).strip() == "Apple"
    assert 0 <= summary["p_corrupted"] <= 1 and 0 <= summary["p_clean"] <= 1
    assert "answer" in p.stdout.splitlines()[0]
    assert sorted(f.name for f in out.iterdir()) == ["ie.parquet", "trace_attn.png", "trace_hidden.png", "trace_mlp.png"]
    ie = pd.read_parquet(out / "ie.parquet")
    T = summary["subject_span"][1] + 5  # "'s headquarters are in" follows the subject: 5 tokens here
    assert set(ie["kind"]) == {"hidden", "mlp", "attn"} and len(ie) == 3 * ie["n_tokens"].iloc[0] * 2
    assert ie["n_tokens"].iloc[0] == T and summary["table"] == str(out / "ie.parquet")
    for kind, peak in summary["peak_ie"].items():
        assert ie.loc[ie["kind"] == kind, "ie"].max() == pytest.approx(peak)


def test_cli_writes_csv(tmp_path, tiny_model_dir):
    model = tiny_model_dir
    p = _cli("trace", "--model", str(model), "--prompt", "Paris is in", "--subject", "Paris", "--kinds", "mlp",
             "--samples", "1", "--window", "2", "--threads", "1", "--out", str(tmp_path / "o"), "--formats", "png",
             "--table-format", "csv", "--noise-std", "dataset")
    assert p.returncode == 0, p.stderr[-3000:]
    ie = pd.read_csv(tmp_path / "o" / "ie.csv")
    assert set(ie["kind"]) == {"mlp"} and {"token", "layer", "ie", "p_restored", "p_clean"} <= set(ie.columns)


@pytest.mark.parametrize("model,why", [
    ("/no/such/model", "model path '/no/such/model' does not exist"),
    ("EMPTY", "a model folder needs config.json"),
    ("bad id with spaces", "Repo id must use alphanumeric chars"),
])
def test_cli_bad_model_is_one_error_line(tmp_path, model, why):
    model = str(tmp_path) if model == "EMPTY" else model
    p = _cli("trace", "--model", model, "--prompt", "Paris is in", "--subject", "Paris")
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot load --model {model!r}") and why in lines[0], p.stderr


def test_cli_rejects_subject_not_in_prompt(tmp_path):
    p = _cli("trace", "--model", str(tmp_path), "--prompt", "Paris is in", "--subject", "Rome")
    assert p.returncode == 2 and "does not occur in prompt" in p.stderr


def test_cli_help_lists_options():
    p = _cli("trace", "--help")
    assert p.returncode == 0 and "--window" in p.stdout and "--noise-multiple" in p.stdout


@pytest.mark.parametrize("prompt,subject,message", [
    ("", "", "error: --prompt is empty"),
    ("Paris is in", "", "error: --subject is empty"),
    ("Mass is in", " ", "error: --subject is only whitespace (' ')"),
    ("   ", "Paris", "error: --prompt is only whitespace ('   ')"),
], ids=["both-empty", "empty-subject", "blank-subject", "blank-prompt"])
def test_cli_rejects_empty_prompt_or_subject_in_one_line(tmp_path, prompt, subject, message):
    p = _cli("trace", "--model", str(tmp_path), "--prompt", prompt, "--subject", subject)
    assert p.returncode == 2 and p.stderr.strip() == message, p.stderr


def test_cli_refuses_a_prompt_over_max_prompt_tokens(tmp_path, tiny_model_dir):
    model = tiny_model_dir
    p = _cli("trace", "--model", str(model), "--prompt", "Apple " + "word " * 400 + "is in", "--subject", "Apple",
             "--max-prompt-tokens", "64", "--threads", "1", "--out", str(tmp_path / "out"))
    assert p.returncode == 2, p.stderr[-2000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: prompt has ") and "over the limit of 64" in last and "raise --max-prompt-tokens" in last
    assert "Traceback" not in p.stderr and not (tmp_path / "out").exists()


def test_cli_max_prompt_tokens_must_be_positive(tmp_path):
    p = _cli("trace", "--prompt", "a", "--subject", "a", "--max-prompt-tokens", "0")
    assert p.returncode == 2 and "--max-prompt-tokens: must be >= 1, got 0" in p.stderr


def test_cli_answer_modes(tmp_path, tiny_model_dir):
    p = _cli("trace", "--model", str(tmp_path), "--prompt", "Paris is in", "--subject", "Paris",
             "--answer", "attribute_full")
    assert p.returncode == 2 and "--attribute" in p.stderr
    model = tiny_model_dir
    p = _cli("trace", "--model", str(model), "--prompt", "Apple's headquarters are in", "--subject", "Apple",
             "--attribute", "Cupertino", "--answer", "attribute_full", "--kinds", "mlp", "--samples", "2",
             "--window", "2", "--threads", "1", "--out", str(tmp_path / "out"), "--formats", "png")
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["answer_mode"] == "attribute_full" and summary["answer"] == " Cupertino"
    assert len(summary["answer_ids"]) >= 1 and "whole attribute" in p.stdout.splitlines()[0]


def test_cli_out_of_memory_at_one_row_is_one_error_line(tmp_path, monkeypatch, capsys, tiny_model_dir):
    """Every batch runs out of memory (fault injected into the engine call): the back-off goes down to one row,
    and the CLI says so in one line instead of a traceback."""
    import torch

    from crosstrace.cli import main
    from crosstrace.trace.api import Tracer

    def oom(self, prompt, corruption, answer, rows):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Tracer, "_run_engine", oom)
    code = main(["trace", "--model", str(tiny_model_dir), "--prompt", "Paris is in", "--subject", "Paris", "--kinds", "mlp",
                 "--samples", "2", "--window", "2", "--threads", "1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: out of memory at 1 row: ") and "--device cpu" in err[-1], err
    assert not (tmp_path / "o").exists()
