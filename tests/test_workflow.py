"""The whole DAG, for real, with Snakemake on a tiny random model (plus real piper + Whisper base)."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import ROOT, make_tiny_model_dir

CONFIG = {
    "results": "results",
    "data": {"limit": 6},
    "filter": {"require_known": False, "max_new_tokens": 3},
    # the attribute's joint probability: the one DAG test of a non-default answer (the others trace top1)
    "trace": {"window": 2, "noise": {"samples": 2}, "max_prompts": 3, "shard_size": 2, "answer": "attribute_full"},
    "figures": {"formats": ["png"]},
    "speech": {"max_prompts": 2, "shard_size": 2},
}


def run_snakemake(workdir, *args, check=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def dag_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("dag")
    model = make_tiny_model_dir(wd / "tiny")
    cfg = {**CONFIG, "models": [{"name": "tiny", "path": str(model)}]}
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(wd, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return wd


def test_dag_produces_tables_and_figures(dag_run):
    run = dag_run / "results" / "tiny" / "t2t"
    ie = pd.read_parquet(run / "ie_per_prompt.parquet")
    aie = pd.read_parquet(run / "aie.parquet")
    known = pd.read_parquet(run / "known.parquet")
    assert len(known) == 6 and set(known["label"]) <= {"exact", "partial", "none"}
    assert (known["reason"] != "").all()  # every decision explained
    # 3 prompts traced (require_known false), in dataset order, over two shards
    assert sorted(ie["known_id"].unique()) == [0, 1, 2]
    assert {"hidden", "mlp", "attn"} == set(ie["kind"])
    assert ie.groupby(["known_id", "kind"]).size().eq(ie.groupby(["known_id", "kind"])["n_tokens"].first() * 2).all()
    # AIE: 6 categories × 2 layers × 3 kinds at most; n counts the prompts having the category
    assert set(aie["layer"]) == {0, 1}
    assert aie.loc[aie["category"] == "last", "n"].eq(3).all()
    for kind in ("hidden", "mlp", "attn"):
        assert (run / "figures" / f"aie_{kind}.png").stat().st_size > 10_000
    summary = yaml.safe_load((run / "summary.json").read_text())
    assert summary["traced"] == 3 and summary["records"] == 6 and summary["engine"] == "fast"
    assert summary["answer"] == "attribute_full"
    assert set(ie["answer_mode"]) == set(aie["answer_mode"]) == {"attribute_full"}
    assert set(pd.read_parquet(run / "category_ie.parquet")["answer_mode"]) == {"attribute_full"}
    assert ie.groupby("known_id")["answer_tokens"].first().ge(1).all()


def test_dag_speech_chain(dag_run):
    sp = dag_run / "results" / "speech"
    qc = pd.read_parquet(sp / "qc.parquet")
    align = pd.read_parquet(sp / "alignment.parquet")
    assert sorted(qc["known_id"]) == [0, 1]
    assert qc["wer"].between(0, 1).all()
    ok = align[align["status"] == "ok"]
    assert set(ok["aligner"]) == {"tts", "whisper"}
    assert (ok["subject_end_s"] > ok["subject_start_s"]).all()


def test_dag_is_complete_and_rerun_does_nothing(dag_run):
    proc = run_snakemake(dag_run, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
