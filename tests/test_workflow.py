"""The whole DAG, for real: the shared finished demo-shaped run (conftest ``demo_run``: Snakemake on the tiny
Llama and the tiny SpiritLM, with real piper + Whisper base speech) has its tables, figures and speech chain."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow


def test_dag_produces_tables_and_figures(demo_run):
    run = demo_run / "results" / "tiny" / "t2t"
    ie = pd.read_parquet(run / "ie_per_prompt.parquet")
    aie = pd.read_parquet(run / "aie.parquet")
    known = pd.read_parquet(run / "known.parquet")
    assert len(known) == 6 and set(known["label"]) <= {"exact", "partial", "none"}
    assert (known["reason"] != "").all()  # every decision explained
    # 4 prompts traced (require_known false, trace.max_prompts 4), in dataset order, over two shards
    assert sorted(ie["known_id"].unique()) == [0, 1, 2, 3]
    assert [sorted(pd.read_parquet(run / "shards" / f"{i}.parquet")["known_id"].unique()) for i in (0, 1)] == [[0, 1], [2, 3]]
    assert {"hidden", "mlp", "attn"} == set(ie["kind"])
    assert ie.groupby(["known_id", "kind"]).size().eq(ie.groupby(["known_id", "kind"])["n_tokens"].first() * 2).all()
    # AIE: 6 categories × 2 layers × 3 kinds at most; n counts the prompts having the category
    assert set(aie["layer"]) == {0, 1}
    assert aie.loc[aie["category"] == "last", "n"].eq(4).all()
    for kind in ("hidden", "mlp", "attn"):
        assert (run / "figures" / f"aie_{kind}.png").stat().st_size > 10_000
    summary = yaml.safe_load((run / "summary.json").read_text())
    assert summary["traced"] == 4 and summary["records"] == 6 and summary["engine"] == "fast"
    assert summary["answer"] == "top1"
    assert set(ie["answer_mode"]) == set(aie["answer_mode"]) == {"top1"}
    assert ie.groupby("known_id")["answer_tokens"].first().eq(1).all()


def test_dag_speech_chain(demo_run):
    sp = demo_run / "results" / "speech"
    qc = pd.read_parquet(sp / "qc.parquet")
    align = pd.read_parquet(sp / "alignment.parquet")
    assert sorted(qc["known_id"]) == [0, 1]
    assert qc["wer"].between(0, 1).all()
    ok = align[align["status"] == "ok"]
    assert set(ok["aligner"]) == {"tts", "whisper"}
    assert (ok["subject_end_s"] > ok["subject_start_s"]).all()
