"""crosstrace's resampler (SpiritLM's: torchaudio.functional.resample's windowed sinc) against torchaudio itself.

The reference outputs in tests/fixtures/resample/torchaudio_16k.npz were written by torchaudio 2.9 in a scratch
environment (make_resample_fixtures.py beside them); the input is a formula, regenerated here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from crosstrace.audio import resample, resample_to_16k
from crosstrace.models.hubert import resample_to_16k as hubert_resample

FIX = Path(__file__).resolve().parent / "fixtures" / "resample"
sys.path.insert(0, str(FIX))
from make_resample_fixtures import RATES, input_digest, waveform  # noqa: E402

REF = np.load(FIX / "torchaudio_16k.npz")


def test_inputs_are_the_ones_torchaudio_saw():
    assert str(REF["input_sha256"]) == input_digest()


@pytest.mark.parametrize("sr", RATES)
def test_matches_torchaudio(sr):
    ref = REF[f"sr{sr}"]
    got = resample_to_16k(waveform(sr), sr)
    assert got.dtype == np.float32 and got.shape == ref.shape == (int(np.ceil(16000 * len(waveform(sr)) / sr)),)
    assert float(np.max(np.abs(got - ref))) <= 1e-6
    # the speech tokenizer's entry point is the same resampler
    np.testing.assert_array_equal(hubert_resample(waveform(sr), sr), got)


def test_matches_torchaudio_multichannel():
    ref = REF["sr44100_stereo"]
    got = resample(waveform(44100, channels=2), 44100, 16000)
    assert got.shape == ref.shape and float(np.max(np.abs(got - ref))) <= 1e-6


def test_differs_from_polyphase_and_filters_above_nyquist():
    """Not a renamed resample_poly: the filters differ, and a 11 kHz tone is removed."""
    from scipy.signal import resample_poly

    x = waveform(22050)
    ours = resample_to_16k(x, 22050)
    poly = resample_poly(x, 320, 441).astype(np.float32)
    assert np.linalg.norm(ours - poly[: len(ours)]) / np.linalg.norm(ours) > 1e-3
    t = np.arange(22050) / 22050
    tone = np.sin(2 * np.pi * 10000 * t).astype(np.float32)
    assert np.abs(resample_to_16k(tone, 22050)[200:-200]).max() < 1e-2
    assert resample_to_16k(x, 16000) is not None and np.array_equal(resample_to_16k(x, 16000), x)
