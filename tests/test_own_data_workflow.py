"""Own facts and own recordings through the real Snakefile.

One module-scoped run: a 4-line CSV of facts (one with its subject missing from the prompt), recordings
written by the test (piper speech saved as 44.1 kHz stereo 24-bit, a silent clip, a missing file) and a
tiny SpiritLM traced T→T and S→T. Every input record ends in exactly one of records / quarantine, every
recording in the manifest as ok or quarantined with the reason, and the S→T chain runs on the recording.
Plus dry runs for the config checks of speech.source: recordings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from workflow_run import run_to_completion, snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow

CSV = """qid,text,entity,answer
10,Vinson Massif is located in the continent of,Vinson Massif,Antarctica
11,The Eiffel Tower is located in the city of,The Eiffel Tower,Paris
12,Toyota was founded in the country of,Honda,Japan
13,Pablo Picasso was a painter from,Pablo Picasso,Spain
"""
COLUMNS = {"id": "qid", "prompt": "text", "subject": "entity", "attribute": "answer"}
WHISPER_ONLY = {"aligners": ["whisper"], "reference": "whisper", "use": "whisper"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, spoken, ckpt):
    pytest.importorskip("faster_whisper")
    from scipy.signal import resample_poly

    d = tmp_path_factory.mktemp("own")
    (d / "facts.csv").write_text(CSV)
    audio = d / "audio"
    audio.mkdir()
    syn = spoken("Vinson Massif is located in the continent of")
    x44 = resample_poly(syn.audio, 441, 160).astype(np.float32)
    sf.write(audio / "vinson.wav", np.stack([x44, 0.9 * x44], axis=1), 44100, subtype="PCM_24")
    sf.write(audio / "eiffel.wav", np.zeros((48000, 1), np.float32), 48000)
    (audio / "manifest.csv").write_text("id,path,transcript\n10,vinson.wav,Vinson Massif is located in the continent of\n"
                                        "11,eiffel.wav,\n13,picasso.wav,\n")
    cfg = tiny_config(
        ckpt["root"],
        data={"source": str(d / "facts.csv"), "columns": COLUMNS, "limit": None},
        # own facts bring attributes of several tokens: trace them whole, in both modalities
        trace={"max_prompts": 3, "shard_size": 8, "answer": "attribute_full"},
        speech={"enabled": True, "source": "recordings", "max_prompts": None, "shard_size": 8,
                "recordings": {"manifest": str(audio / "manifest.csv")}, "align": WHISPER_ONLY},
        stats={"similarity": {"enabled": False}},
    )
    cfg["models"][0].update(name="spirit", family="spiritlm", modalities=["t2t", "s2t"])
    write_config(d / "config.yaml", cfg)
    run_to_completion(d, "--cores", "2", timeout=900)
    return d


def test_own_csv_records_and_quarantine(run):
    data = run / "results" / "data"
    records = pd.read_parquet(data / "records.parquet")
    quarantine = pd.read_parquet(data / "quarantine.parquet")
    assert records["known_id"].tolist() == [10, 11, 13]
    assert records.loc[0, "prompt"] == "Vinson Massif is located in the continent of"
    assert records.loc[0, "attribute"] == "Antarctica"
    assert quarantine[["index", "known_id"]].values.tolist() == [[2, "12"]]
    assert "subject 'Honda' does not occur in prompt" in quarantine.loc[0, "reason"]
    log = (run / "results" / "logs" / "read_facts" / "read_facts.log").read_text()
    assert "no data.file_sha256 given, so the file is not checked against a hash" in log
    assert "4 input records, 3 kept, 1 quarantined" in log


def test_recordings_manifest_quarantines_bad_audio_with_reasons(run):
    sp = run / "results" / "speech"
    m = pd.concat([pd.read_parquet(p) for p in sorted((sp / "manifest").glob("*.parquet"))]).set_index("known_id")
    assert sorted(m.index) == [10, 11, 13], "every record selected for speech is accounted for"
    assert m.loc[10, "status"] == "ok" and m.loc[10, "backend"] == "recordings" and m.loc[10, "voice"] == "vinson.wav"
    assert "silent audio" in m.loc[11, "reason"] and "missing audio file" in m.loc[13, "reason"]
    wav, sr = sf.read(run / m.loc[10, "path"], always_2d=True)  # paths are relative to the run directory
    assert sr == 16000 and wav.shape[1] == 1
    qc = pd.read_parquet(sp / "qc.parquet").set_index("known_id")
    assert bool(qc.loc[10, "passes_qc"]) and not qc.loc[11, "passes_qc"]
    align = pd.read_parquet(sp / "alignment.parquet").set_index("known_id")
    assert align.loc[10, "status"] == "ok" and align.loc[10, "aligner"] == "whisper"
    assert align.loc[10, "subject_end_s"] > align.loc[10, "subject_start_s"]


def test_s2t_runs_on_the_recording(run):
    known = pd.read_parquet(run / "results" / "spirit" / "s2t" / "known.parquet").set_index("known_id")
    assert sorted(known.index) == [10, 11, 13]
    assert known.loc[10, "status"] == "ok"
    assert known.loc[[11, 13], "status"].eq("quarantined").all()
    assert "silent audio" in known.loc[11, "reason"]
    ie = pd.read_parquet(run / "results" / "spirit" / "s2t" / "ie_per_prompt.parquet")
    assert ie["known_id"].unique().tolist() == [10]
    for mod in ("t2t", "s2t"):
        assert (run / "results" / "spirit" / mod / "figures" / "aie_hidden.png").stat().st_size > 10_000


def test_own_facts_traced_with_the_whole_attribute(run):
    """trace.answer: attribute_full on own facts, T→T and S→T: both read the attribute's text tokens after
    the prompt (S→T: after [Text]), and every table and summary records the mode."""
    res = run / "results" / "spirit"
    ie = {mod: pd.read_parquet(res / mod / "ie_per_prompt.parquet") for mod in ("t2t", "s2t")}
    for mod, t in ie.items():
        assert set(t["answer_mode"]) == {"attribute_full"}, mod
        assert set(pd.read_parquet(res / mod / "aie.parquet")["answer_mode"]) == {"attribute_full"}, mod
        assert set(pd.read_parquet(res / mod / "category_ie.parquet")["answer_mode"]) == {"attribute_full"}, mod
        assert yaml.safe_load((res / mod / "summary.json").read_text())["answer"] == "attribute_full"
        traced = pd.read_parquet(res / mod / "traced_prompts.parquet")
        assert set(traced["answer_mode"]) == {"attribute_full"}, mod
    one = {mod: t[t["known_id"] == 10].iloc[0] for mod, t in ie.items()}
    assert one["t2t"]["answer"] == one["s2t"]["answer"] and one["t2t"]["answer"].strip() == "Antarctica"
    assert one["t2t"]["answer_tokens"] == one["s2t"]["answer_tokens"] >= 1
    assert one["t2t"]["answer_id"] == one["s2t"]["answer_id"]


@pytest.mark.parametrize("speech,message", [
    ({"source": "recordings"}, "speech.source: recordings needs speech.recordings.manifest"),
    ({"source": "recordings", "recordings": {"manifest": "m.csv"}},
     "speech.source: recordings has no TTS word timings, so the tts aligner cannot run; speech.align.aligners, "
     "speech.align.reference, speech.align.use name tts"),
    ({"source": "recordings", "recordings": {"manifest": "m.csv"}, "align": {"aligners": ["whisper"], "reference": "tts",
                                                                            "use": "whisper"}},
     "speech.align.reference name tts"),
], ids=["no-manifest", "default-aligners", "reference-tts"])
def test_recordings_config_checks(tmp_path, speech, message):
    write_config(tmp_path / "config.yaml", tiny_config("m", speech={"enabled": True, **speech}))
    proc = snakemake(tmp_path, "-n", timeout=120)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr


def test_own_facts_dry_run_plans_read_facts_not_download(tmp_path):
    (tmp_path / "f.csv").write_text("prompt,subject,attribute\nParis is the capital of,Paris,France\n")
    write_config(tmp_path / "config.yaml", tiny_config("m", data={"source": "f.csv"}))
    proc = snakemake(tmp_path, "-n", "results/data/records.parquet", timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "read_facts" in out and "download_known" not in out and "validate_known" not in out
