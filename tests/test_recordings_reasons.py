"""Issue 23 §4.3: a recording's own reason (missing file, unreadable, silent, too short, no manifest row)
travels from the recordings manifest into speech/qc.parquet, the alignment and the S→T known table, and
nothing says "synthesis" where no TTS ran. The synthesiser's reasons travel the same way."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from crosstrace.speech.pipeline import SynthResult, align_clip, qc_clip
from crosstrace.speech.prompts import prompt_table
from crosstrace.speech.recordings import Recording, load_recording

PROMPT, SUBJECT = "Vinson Massif is located in the continent of", "Vinson Massif"


def recording(tmp_path, case: str) -> Recording | None:
    """The probe's five bad recordings, for known_id 1."""
    src = tmp_path / f"{case}.wav"
    if case == "no-row":
        return None
    if case == "unreadable":
        src.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    elif case == "silent":
        sf.write(src, np.zeros(32000, dtype=np.float32), 16000)
    elif case == "short":
        sf.write(src, 0.3 * np.sin(np.arange(800) / 3).astype(np.float32), 16000)  # 0.05 s
    return Recording(1, src, str(src))


EXPECTED = {
    "missing": "missing audio file {dir}/missing.wav",
    "unreadable": "unreadable audio file {dir}/unreadable.wav: LibsndfileError: Error opening '{dir}/unreadable.wav': "
                  "Error in WAV file. No 'data' chunk marker.",
    "silent": "silent audio (RMS 0.00e+00 < 1e-03)",
    "short": "recording is 0.05 s, shorter than the subject 'Vinson Massif' takes to say (12 letters at 30 per second: "
             "0.40 s)",
    "no-row": "no recording for this id in the manifest",
}


@pytest.mark.parametrize("case", list(EXPECTED))
def test_the_recordings_reason_reaches_qc_alignment_and_the_s2t_table(tmp_path, case):
    why = EXPECTED[case].format(dir=tmp_path)
    res = load_recording(1, PROMPT, SUBJECT, recording(tmp_path, case), tmp_path / "out" / "1.wav", max_wer=0.5,
                         min_rms=1e-3, max_chars_per_s=30.0)
    assert (res.status, res.reason) == ("quarantined", f"known_id=1: {why}")
    manifest = pd.DataFrame([asdict(res)], columns=list(SynthResult.__dataclass_fields__))
    row = manifest.set_index("known_id").loc[1]  # as scripts/speech_qc.py looks it up
    record = pd.DataFrame([{"known_id": 1, "prompt": PROMPT, "subject": SUBJECT}]).itertuples(index=False).__next__()

    qc = qc_clip(None, record, row, max_wer=0.5)  # no audio: Whisper is never asked
    assert qc.reason == f"known_id=1: no audio ({why})" and not qc.passes_qc
    qc_row = pd.Series(asdict(qc))
    align = align_clip(["whisper"], record, row, qc_row)
    assert [a["reason"] for a in align] == [f"known_id=1: no audio ({why})"]

    records = pd.DataFrame([{"known_id": 1, "subject": SUBJECT, "attribute": "Antarctica", "prompt": PROMPT}])
    table = prompt_table(records, records[["known_id"]], manifest, pd.DataFrame([asdict(qc)]), pd.DataFrame(align),
                         pd.DataFrame(columns=["known_id"]), "whisper", tokenizer=None)
    assert table[["status", "stage", "reason"]].values.tolist() == [["quarantined", "recordings", f"known_id=1: {why}"]]
    assert "synthes" not in qc.reason + align[0]["reason"] + table["stage"][0] + table["reason"][0]


def test_a_synthesiser_failure_keeps_its_own_words_too():
    manifest = pd.DataFrame([asdict(SynthResult(4, "", float("nan"), 16000, "piper", "en_US-joe-medium", "quarantined",
                                                "known_id=4: TTS failed: TTSError: empty text", None))])
    record = pd.DataFrame([{"known_id": 4, "prompt": "x", "subject": "x"}]).itertuples(index=False).__next__()
    qc = qc_clip(None, record, manifest.set_index("known_id").loc[4], max_wer=0.5)
    assert qc.reason == "known_id=4: no audio (TTS failed: TTSError: empty text)"
    records = pd.DataFrame([{"known_id": 4, "subject": "x", "attribute": "y", "prompt": "x"}])
    table = prompt_table(records, records[["known_id"]], manifest, None, pd.DataFrame(columns=["known_id", "aligner"]),
                         pd.DataFrame(columns=["known_id"]), "whisper", tokenizer=None)
    assert table[["stage", "reason"]].values.tolist() == [["synthesize", "known_id=4: TTS failed: TTSError: empty text"]]
