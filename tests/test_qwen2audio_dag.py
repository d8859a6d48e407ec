"""The DAG on a continuous-input speech LM: the tiny random Qwen2-Audio (tests/qwen2audio_fixture.py), T→T and S→T,
with the paired T→T vs S→T comparison, through the real Snakefile (piper TTS, Whisper QC, TTS word timings).

One module-scoped Snakemake run and `snakemake --report` (~2–4 min on a shared 2-core machine: every job imports
torch); the bad-input test then feeds the run's own speech tables, broken, to the filter step."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT

from crosstrace.vocabulary import CATEGORIES

pytestmark = pytest.mark.slow
PAIR = "qwen_t2t_vs_qwen_s2t"


@pytest.fixture(scope="module")
def run(tmp_path_factory, qwen2audio_dir):
    d = tmp_path_factory.mktemp("qwen-dag")
    cfg = {
        "results": "results",
        "data": {"limit": 3},
        "models": [{"name": "qwen", "family": "qwen2-audio", "path": str(qwen2audio_dir), "modalities": ["t2t", "s2t"]}],
        "filter": {"require_known": False, "max_new_tokens": 3},
        "trace": {"noise": {"samples": 2}, "window": 2, "max_prompts": 2, "shard_size": 8},
        "figures": {"formats": ["png"]},
        # piper at its own speed: one audio position per 40 ms encoder frame is enough for every text token
        "speech": {"max_prompts": 2, "align": {"aligners": ["tts"], "use": "tts", "reference": "tts"}},
        "stats": {"similarity": {"n_random": 3, "n_boot": 50}, "n_boot": 200,
                  "compare": [{"a": {"model": "qwen", "modality": "t2t"}, "b": {"model": "qwen", "modality": "s2t"}}]},
    }
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(d),
           "--configfile", str(d / "config.yaml"), "--cores", "2"]
    for extra in ([], ["--report", str(d / "report.html")]):
        proc = subprocess.run(cmd + extra, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in sorted((d / "results" / "logs").rglob("*.log"))
                             if "Error" in p.read_text() or "Traceback" in p.read_text())
            pytest.fail(f"snakemake {' '.join(extra)} failed:\n{proc.stderr[-6000:]}\n{logs}")
    return d / "results"


def _png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_aie_tables_with_the_six_categories_and_figures_for_both_modalities(run):
    for mod in ("t2t", "s2t"):
        aie = pd.read_parquet(run / "qwen" / mod / "aie.parquet")
        assert set(aie["modality"]) == {mod} and set(aie["kind"]) == {"hidden", "mlp", "attn"}
        assert set(aie["category"]) == set(CATEGORIES), mod  # subjects of several tokens: all six are present
        assert np.isfinite(aie["aie"].to_numpy(float)).all()
        for kind in ("hidden", "mlp", "attn"):
            assert _png(run / "qwen" / mod / "figures" / f"aie_{kind}.png")
    assert _png(run / "figures" / "aie_panels.png")


def test_s2t_rows_are_spoken_text_tokens_then_the_template_tail(run):
    """The audio-position step (units table: one position per 25 Hz encoder frame, no units), the known table
    (the audio starts after <|audio_bos|>; <|audio_eos|> follows it), and the traced rows: the spoken text tokens,
    each the mean of its audio positions, then <|audio_eos|>, the last token."""
    units = pd.read_parquet(run / "qwen" / "s2t" / "units" / "0.parquet")
    assert (units["status"] == "ok").all() and all(list(r) == [1] * n for r, n in zip(units["run_lengths"],
                                                                                     units["n_frames"], strict=True))
    known = pd.read_parquet(run / "qwen" / "s2t" / "known.parquet")
    assert len(known) == 3 and (known.loc[known["status"] != "ok", "stage"] == "speech").all()  # none dropped
    ok = known[known["status"] == "ok"].set_index("known_id")
    assert len(ok) == 2 and (ok["unit_offset"] == 1).all() and all(list(t) == ["<|audio_eos|>"] for t in ok["tail_tokens"])
    # 25 Hz: a clip of d seconds has ceil(d · 25) positions, give or take the encoder's rounding of the last frame
    assert all(abs(n - d * 25) <= 2 for n, d in zip(ok["n_units"], ok["duration_s"], strict=True))
    ie = pd.read_parquet(run / "qwen" / "s2t" / "ie_per_prompt.parquet")
    t2t = pd.read_parquet(run / "qwen" / "t2t" / "ie_per_prompt.parquet")
    assert set(ie["known_id"]) == set(ok.index) == set(t2t["known_id"])
    for kid, g in ie.groupby("known_id"):
        r = ok.loc[kid]
        toks = g.drop_duplicates("token_index").sort_values("token_index")
        assert toks["token"].tolist() == [*r["text_tokens"], "<|audio_eos|>"] and (g["token_rows"] == "spoken").all()
        assert (g["subject_start"] == r["subject_token_start"]).all() and (g["subject_end"] == r["subject_token_end"]).all()
        spans = list(zip(toks["pos_start"], toks["pos_end"], strict=True))
        assert spans[-1] == (1 + r["n_units"], 2 + r["n_units"])  # <|audio_eos|>
        text = spans[:-1]  # ordered, disjoint, inside the audio positions 1 .. n_units
        assert 1 <= text[0][0] and text[-1][1] <= 1 + r["n_units"] and all(a < b for a, b in text)
        assert all(b <= c for (_, b), (c, _) in zip(text, text[1:], strict=False))
        assert (r["pos_start"], r["pos_end"]) == (text[int(r["subject_token_start"])][0], text[int(r["subject_token_end"]) - 1][1])
        # T→T with the default template is the prompt text alone: its tokens, the subject among them
        assert t2t[t2t["known_id"] == kid]["n_tokens"].iloc[0] == len(r["text_tokens"])
    noise = json.loads((run / "qwen" / "s2t" / "noise.json").read_text())
    assert noise["basis"].startswith("input embeddings at the subject's audio positions")
    assert noise["n_tokens"] == int(ok["subject_units"].sum()) and noise["std"] > 0
    summary = json.loads((run / "qwen" / "s2t" / "summary.json").read_text())
    assert summary["traced"] == 2 and summary["no_prompt"] == 1 and summary["token_rows"] == "spoken"
    assert "<|audio_eos|>" in summary["aggregation"] and summary["units_in_prompts"] == int(ok["n_units"].sum())


def test_paired_t2t_vs_s2t_comparison(run):
    d = run / "compare" / PAIR
    summary = json.loads((d / "summary.json").read_text())
    assert summary["n_pairs"] == 2 and summary["a"]["modality"] == "t2t" and summary["b"]["modality"] == "s2t"
    cmp = pd.read_parquet(d / "comparison.parquet")
    assert len(cmp) and set(cmp["kind"]) == {"hidden", "mlp", "attn"} and _png(d / "diff.png")


def test_audio_position_view_and_similarity(run):
    view = pd.read_parquet(run / "qwen" / "s2t" / "ie_per_unit.parquet")
    regions = view.drop_duplicates(["known_id", "token_index"])
    assert set(regions["region"]) <= {"marker", "silence", "pause", "token", "last"}
    assert (regions["region"] == "marker").groupby(regions["known_id"]).sum().eq(1).all()  # <|audio_bos|>
    assert (regions.loc[regions["region"] == "last", "token"] == "<|audio_eos|>").all()
    assert _png(run / "qwen" / "s2t" / "figures" / "ie_per_unit_hidden.png")
    sim = pd.read_parquet(run / "qwen" / "similarity" / "similarity.parquet")
    assert len(sim) == 4 * 2 * 2 and (sim["n"] == 2).all() and np.isfinite(sim["mean"].to_numpy(float)).all()
    raw = (run.parent / "report.html").read_text(encoding="utf-8")
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), raw.replace("\\n", " "))
    assert "audio position (an audio-encoder frame at 25 Hz" in text and "similarity.png" in raw


def test_bad_audio_through_the_filter_step(run, tmp_path, monkeypatch):
    """The run's own speech tables with one clip replaced by 31 s of audio (its audio-position row is quarantined
    by the family's step) and the other's subject moved past the end of its clip (the encoder's padding): the
    filter step keeps every record, the two as quarantined rows with their stage and reason."""
    from types import SimpleNamespace

    from crosstrace.audio import write_wav16
    from crosstrace.config import ModelSpec
    from crosstrace.io import read_json
    from crosstrace.models.speech_family import speech_family
    from crosstrace.speech.units import encode_clip
    from crosstrace.steps import known_table

    monkeypatch.chdir(run.parent)  # the manifest's clip paths are relative to the run's directory
    manifest = pd.read_parquet(run / "speech" / "manifest" / "0.parquet")
    first, second = sorted(manifest.loc[manifest["status"] == "ok", "known_id"])
    long_wav = tmp_path / "long.wav"
    write_wav16(long_wav, np.zeros(31 * 16000, dtype=np.float32))
    spec = ModelSpec.from_dict(read_json(run / "models" / "qwen.json"))
    units = pd.read_parquet(run / "qwen" / "s2t" / "units" / "0.parquet")
    units = pd.concat([units[units["known_id"] != first], pd.DataFrame([encode_clip(
        speech_family("qwen2-audio").speech_encoder(spec),
        SimpleNamespace(known_id=first, status="ok", reason="", path=str(long_wav)))])])
    alignment = pd.read_parquet(run / "speech" / "alignment.parquet")
    end = float(manifest.set_index("known_id").loc[second, "duration_s"])
    alignment.loc[alignment["known_id"] == second, ["subject_start_s", "subject_end_s"]] = [end + 0.5, end + 0.8]
    units.to_parquet(tmp_path / "units.parquet")
    alignment.to_parquet(tmp_path / "alignment.parquet")
    speech = {"speech_records": run / "speech" / "records.parquet", "manifest": [run / "speech" / "manifest" / "0.parquet"],
              "qc": [run / "speech" / "qc" / "0.parquet"], "alignment": tmp_path / "alignment.parquet",
              "units": [tmp_path / "units.parquet"]}
    known = known_table(run / "models" / "qwen.json", "s2t", run / "data" / "records.parquet", 3, 4,
                        tmp_path / "known.parquet", run / "data" / "quarantine.parquet", speech=speech, aligner="tts",
                        rows={"token_rows": "spoken", "pause_owner": "none"}).set_index("known_id")
    records = pd.read_parquet(run / "data" / "records.parquet")
    assert sorted(known.index) == sorted(records["known_id"]) and (known["status"] == "quarantined").all()
    assert known.loc[first, "stage"] == "units" and known.loc[first, "reason"] == (
        f"known_id={first}: AudioInputError: the clip is 31.00 s, longer than the audio encoder's 30 s window "
        "(the feature extractor would cut it)")
    assert known.loc[second, "stage"] == "span" and "falls in the encoder's padding" in known.loc[second, "reason"]
    assert (known["label"] == "quarantined").all()
