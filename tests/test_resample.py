"""crosstrace's resampler (SpiritLM's: torchaudio.functional.resample's windowed sinc) against torchaudio itself.

The reference outputs in tests/fixtures/resample/torchaudio_16k.npz were written by torchaudio 2.9 in a scratch
environment (make_resample_fixtures.py beside them); the input is a formula, regenerated here. Measured with the
pinned torch: mono outputs differ from torchaudio's by at most 6.0e-8 / 1.2e-7 / 1.2e-7 / 2.4e-7 (22.05 / 24 /
44.1 / 48 kHz), the stereo case by 0; the tests allow 5e-7.

torchaudio cannot be installed beside the pinned torch, so the output *lengths* of long inputs are checked
against torchaudio's length formula reproduced here (``torch.ceil(torch.as_tensor(new * n / orig)).long()`` in
torchaudio/functional/functional.py ``_apply_sinc_resample_kernel``: the quotient becomes a float32 tensor
before the ceiling), written independently with numpy.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from crosstrace.audio import check_rate, resample, resample_to_16k, resampled_length

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
    assert float(np.max(np.abs(got - ref))) <= 5e-7


def test_matches_torchaudio_multichannel():
    ref = REF["sr44100_stereo"]
    got = resample(waveform(44100, channels=2), 44100, 16000)
    assert got.shape == ref.shape and float(np.max(np.abs(got - ref))) <= 5e-7


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


def torchaudio_length(n: int, sr: int) -> int:
    """torchaudio's output length for n samples at sr → 16 kHz: ceil of the float32-rounded quotient."""
    g = math.gcd(sr, 16000)
    orig, new = sr // g, 16000 // g
    return math.ceil(float(np.float32(new * n / orig)))


# (rate, input length): long inputs; the first two of 44.1 and 22.05 kHz are lengths where the float32 ceiling
# is one sample shorter than the exact ceil(16000·n/sr) (e.g. 528974 at 44.1 kHz: 191918.000… → 191918)
LONG = [(44100, 528974), (44100, 353128), (44100, 44100 * 11 + 13), (22050, 264487), (22050, 176564),
        (22050, 22050 * 12 + 5), (24000, 24000 * 12 + 1), (24000, 24000 * 9 + 2), (48000, 48000 * 12 + 1),
        (48000, 48000 * 10 + 2)]


@pytest.mark.parametrize(("sr", "n"), LONG)
def test_long_output_lengths_equal_torchaudios(sr, n):
    x = np.sin(np.arange(n, dtype=np.float32) * 0.01)
    got = resample_to_16k(x, sr)
    assert len(got) == torchaudio_length(n, sr) == resampled_length(n, sr // math.gcd(sr, 16000),
                                                                     16000 // math.gcd(sr, 16000))
    if (sr, n) in LONG[:2] + LONG[3:5]:
        assert len(got) == math.ceil(16000 * n / sr) - 1  # where exact arithmetic would give one more


def test_length_formula_at_float32_precision_limits():
    """Past 2**24 output samples float32 cannot hold every integer: torchaudio's length comes out shorter
    still (an hour at 48 kHz loses one sample, at 24 kHz two); the formula follows it there too."""
    for sr, n in [(48000, 48000 * 3600 + 1), (24000, 24000 * 3600 + 2), (44100, 44100 * 3600 + 7)]:
        g = math.gcd(sr, 16000)
        assert resampled_length(n, sr // g, 16000 // g) == torchaudio_length(n, sr)
    assert torchaudio_length(48000 * 3600 + 1, 48000) == 57_600_000  # exact: 57 600 001
    assert torchaudio_length(24000 * 3600 + 2, 24000) == 57_600_000  # exact: 57 600 002


def test_rate_check():
    assert check_rate(22050.0) == 22050
    with pytest.raises(ValueError, match="whole number of Hz"):
        check_rate(22050.5)
    with pytest.raises(ValueError, match="need at least 1000 Hz"):
        check_rate(800)
