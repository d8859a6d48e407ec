"""Your own recordings (speech.source: recordings): WAVs written by the test at other sample rates and
channel counts become 16 kHz mono exactly as TTS output does; bad audio is quarantined with the reason;
a malformed manifest is a DataError naming the line; real piper speech passes Whisper QC and alignment."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import soundfile as sf

from crosstrace.audio import resample_to_16k
from crosstrace.data import DataError
from crosstrace.speech.pipeline import load_audio16k
from crosstrace.speech.recordings import Recording, load_recording, read_manifest

PROMPT, SUBJECT = "Vinson Massif is located in the continent of", "Vinson Massif"


def tone(seconds: float, sr: int, channels: int = 1, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = amp * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return np.stack([x * (1 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


def rec(path, transcript=None, known_id=1) -> Recording:
    return Recording(known_id, path, str(path), transcript)


def load(r, tmp_path, **kw):
    kw = {"max_wer": 0.5, "min_rms": 1e-3, "max_chars_per_s": 30.0, **kw}
    return load_recording(1, PROMPT, SUBJECT, r, tmp_path / "out" / "1.wav", **kw)


@pytest.mark.parametrize("sr,channels,subtype", [(44100, 2, "PCM_16"), (48000, 1, "PCM_24"), (8000, 1, "PCM_16"),
                                                 (22050, 6, "FLOAT"), (16000, 1, "PCM_16")])
def test_any_rate_and_channel_count_becomes_16k_mono_like_tts(tmp_path, sr, channels, subtype):
    src = tmp_path / f"in_{sr}_{channels}.wav"
    sf.write(src, tone(2.0, sr, channels), sr, subtype=subtype)
    res = load(rec(src), tmp_path)
    assert res.status == "ok" and res.reason == "" and res.backend == "recordings" and res.voice == str(src)
    assert res.sample_rate == 16000 and res.word_timings is None
    out, out_sr = sf.read(res.path, dtype="float32", always_2d=True)
    assert out_sr == 16000 and out.shape[1] == 1 and sf.info(res.path).subtype == "PCM_16"
    # The same conversion as TTS output: mean of the channels, then the project's resample_to_16k, 16-bit.
    x, _ = sf.read(src, dtype="float32", always_2d=True)
    expected = resample_to_16k(x.mean(axis=1), sr)
    assert out.shape[0] == len(expected) and math.isclose(res.duration_s, len(expected) / 16000)
    np.testing.assert_allclose(out[:, 0], np.clip(expected, -1, 1), atol=1 / 32767 + 1e-6)
    np.testing.assert_array_equal(load_audio16k(res.path), out[:, 0])  # what QC, alignment and units read


def test_relative_manifest_paths_start_at_the_manifest_folder(tmp_path):
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "a.wav", tone(2.0, 16000), 16000)
    m = tmp_path / "m.csv"
    m.write_text("id,path,transcript\n1,audio/a.wav,\n2,/abs/b.flac,Paris is the capital of\n")
    recs = read_manifest(m)
    assert recs[1] == Recording(1, tmp_path / "audio" / "a.wav", "audio/a.wav", None)
    assert recs[2].path.as_posix() == "/abs/b.flac" and recs[2].transcript == "Paris is the capital of"
    assert load(recs[1], tmp_path).status == "ok"


def bad_reason(tmp_path, audio=None, sr=44100, transcript=None, subtype="PCM_16", raw: bytes | None = None,
               name="bad.wav") -> str:
    src = tmp_path / name
    if raw is not None:
        src.write_bytes(raw)
    elif audio is not None:
        sf.write(src, audio, sr, subtype=subtype)
    res = load(rec(src, transcript), tmp_path)
    assert res.status == "quarantined" and res.path == "" and not (tmp_path / "out" / "1.wav").exists()
    assert res.reason.startswith("known_id=1: ")
    return res.reason


def test_missing_file(tmp_path):
    assert "missing audio file" in bad_reason(tmp_path) and "bad.wav" in bad_reason(tmp_path)


def test_no_manifest_row(tmp_path):
    res = load(None, tmp_path)
    assert res.status == "quarantined" and res.reason == "known_id=1: no recording for this id in the manifest"


def test_unreadable_file(tmp_path):
    reason = bad_reason(tmp_path, raw=b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    assert "unreadable audio file" in reason and "bad.wav" in reason


def test_empty_wav(tmp_path):
    assert "empty audio file" in bad_reason(tmp_path, audio=np.zeros((0, 1), np.float32))


def test_silent(tmp_path):
    assert "silent audio (RMS" in bad_reason(tmp_path, audio=tone(2.0, 44100, 2, amp=1e-4))
    assert "silent audio (RMS 0.00e+00" in bad_reason(tmp_path, audio=np.zeros((44100, 1), np.float32))


def test_clipped_in_one_channel_only(tmp_path):
    x = tone(2.0, 44100, 2)
    x[:, 1] = np.clip(x[:, 1] * 10, -1, 1)  # the right channel is clipped; the mean of both channels would not be
    reason = bad_reason(tmp_path, audio=x)
    assert "clipped audio (" in reason and "in channel 2 of 2" in reason


def test_shorter_than_the_subject(tmp_path):
    # "Vinson Massif": 12 letters at 30 per second need 0.40 s
    reason = bad_reason(tmp_path, audio=tone(0.3, 44100))
    assert reason == ("known_id=1: recording is 0.30 s, shorter than the subject 'Vinson Massif' takes to say "
                      "(12 letters at 30 per second: 0.40 s)")
    ok = tmp_path / "ok.wav"
    sf.write(ok, tone(0.45, 44100), 44100)
    assert load(rec(ok), tmp_path).status == "ok"


def test_transcript_mismatch_above_max_wer(tmp_path):
    src = tmp_path / "a.wav"
    sf.write(src, tone(2.0, 16000), 16000)
    res = load(rec(src, "The Eiffel Tower is in Paris"), tmp_path)  # a recording filed under the wrong id
    assert res.status == "quarantined" and "differs from the prompt" in res.reason and "> max_wer 0.5" in res.reason
    # A transcript within max_wer (one word of eight differs, WER 0.125) passes.
    assert load(rec(src, "Vinson Massif is located on the continent of"), tmp_path).status == "ok"


@pytest.mark.parametrize("content,message", [
    ("", "missing ['id', 'path']"),
    ("id,file\n1,a.wav\n", "missing ['path']"),
    ("id,path\nx,a.wav\n", "line 2: id 'x' is not a non-negative integer"),
    ("id,path\n1,a.wav\n1,b.wav\n", "line 3: duplicate id 1"),
    ("id,path\n1,a.wav,extra\n", "line 2: 2 fields expected"),
    ("id,path,transcript\n1\n", "line 2: 3 fields expected"),
], ids=["empty", "no-path-column", "bad-id", "duplicate-id", "extra-field", "missing-field"])
def test_malformed_manifest_is_a_data_error_naming_file_and_line(tmp_path, content, message):
    m = tmp_path / "manifest.csv"
    m.write_text(content)
    with pytest.raises(DataError, match=re.escape(message)) as e:
        read_manifest(m)
    assert str(m) in str(e.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(DataError, match="no such recordings manifest"):
        read_manifest(tmp_path / "nope.csv")


# -------------------------------------------------------- real speech through the unchanged chain

@pytest.mark.slow
def test_recorded_speech_passes_whisper_qc_and_aligns(tmp_path, spoken, whisper_base):
    """Piper speech written by the test as a 44.1 kHz stereo 24-bit file (a 'recording'): the rest of the
    chain (Whisper QC, whisper alignment) runs on the converted WAV exactly as on TTS output."""
    from scipy.signal import resample_poly

    from crosstrace.speech.pipeline import align_record, qc_record, transcript_from_qc

    syn = spoken(PROMPT)
    x44 = resample_poly(syn.audio, 441, 160).astype(np.float32)
    src = tmp_path / "recorded.wav"
    sf.write(src, np.stack([x44, 0.8 * x44], axis=1), 44100, subtype="PCM_24")
    res = load(rec(src, PROMPT), tmp_path)
    assert res.status == "ok", res.reason
    audio = load_audio16k(res.path)
    asr = whisper_base
    qc = qc_record(asr, 1, PROMPT, audio, max_wer=0.5)
    # As good as the synthesised clip itself, up to one word of eight (Whisper hears "Benson Massif" or
    # "Benson Massiff" for the subject; the 44.1 kHz round trip is not bit-identical).
    direct = qc_record(asr, 1, PROMPT, syn.audio, max_wer=0.5)
    assert qc.passes_qc and direct.passes_qc and qc.wer <= direct.wer + 0.125 and qc.wer <= 0.25, (qc, direct)
    a = align_record("whisper", 1, PROMPT, SUBJECT, audio, transcript=transcript_from_qc(qc.transcript, qc.words))
    assert a.status == "ok" and 0 <= a.subject_start_s < a.subject_end_s < res.duration_s
