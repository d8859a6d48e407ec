"""Audio at 16 kHz: SpiritLM's resampler and WAV input/output.

The one resampler of the project (synthesis, user recordings and the speech tokenizer all use it), kept
below both ``models`` (the HuBERT tokenizer resamples its input) and ``speech`` (TTS and recordings).
numpy at import; torch and soundfile only inside the functions that need them.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np

TARGET_SR = 16000
MIN_INPUT_RATE = 1000  # Hz; anything lower is not speech audio


#: SpiritLM resamples with torchaudio.functional.resample's defaults: a Hann-windowed sinc interpolation
#: with 6 zero crossings each side and the cutoff at 0.99 of the lower Nyquist frequency
LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99


def sinc_resample_kernel(orig: int, new: int, width_zeros: int = LOWPASS_FILTER_WIDTH, rolloff: float = ROLLOFF,
                         dtype=None):
    """The polyphase filter bank of windowed-sinc resampling from ``orig`` to ``new`` Hz (both reduced by
    their gcd): one row of ``2·width + orig`` taps per output phase, and ``width`` (the padding per side).

    Output sample j of a block of ``new`` reads input samples ``[i·orig − width, i·orig + orig + width)``
    at times measured in input samples; tap n sits at ``t = (n − width)/orig − j/new`` input-seconds from
    the output instant. The filter is ``sinc(π·f_c·t)·f_c/orig`` with ``f_c = rolloff·min(orig, new)``,
    windowed by ``cos²(π·f_c·t / (2·width_zeros))`` and cut at ``|f_c·t| ≤ width_zeros`` zero crossings.
    Computed in the dtype of the audio (float32), as the reference computes it.
    """
    import torch

    dtype = dtype or torch.float32
    base = min(orig, new) * rolloff
    width = math.ceil(width_zeros * orig / base)
    idx = torch.arange(-width, width + orig, dtype=dtype)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=dtype)[:, None, None] / new + idx
    t *= base
    t = t.clamp_(-width_zeros, width_zeros)
    window = torch.cos(t * math.pi / width_zeros / 2) ** 2
    t *= math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernel *= window * (base / orig)
    return kernel, width


def resampled_length(n: int, orig: int, new: int) -> int:
    """Output length of :func:`resample` for ``n`` input samples: ``ceil(new · n / orig)`` with the quotient
    rounded to float32 first, as torchaudio computes it (``torch.ceil(torch.as_tensor(new * n / orig))``).
    ``orig`` and ``new`` are the rates reduced by their gcd. Exact arithmetic would give one sample more
    whenever the float32 rounding lands on an integer just below the true quotient (1553 of the input
    lengths up to 12 s at 44.1 kHz)."""
    import torch

    return int(torch.ceil(torch.as_tensor(new * n / orig, dtype=torch.float32)))


def resample(audio: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Windowed-sinc resampling, the algorithm of ``torchaudio.functional.resample`` with its defaults
    (``sinc_interp_hann``, ``lowpass_filter_width=6``, ``rolloff=0.99``), which SpiritLM uses; written here
    because torchaudio cannot be a dependency. ``audio``: float, last axis = time.

    The input is padded with ``width`` zeros in front and ``width + orig`` behind, filtered by the phase
    kernels with stride ``orig`` (one block of ``new`` outputs per ``orig`` inputs), and cut to
    :func:`resampled_length` samples. Against torchaudio 2.9's own output (tests/test_resample.py) the
    samples differ by at most 2.4e-7 (mono, 22.05/24/44.1/48 kHz → 16 kHz) and the lengths are equal.
    """
    import torch
    import torch.nn.functional as F

    if orig_sr == new_sr:
        return np.asarray(audio, dtype=np.float32)
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    n = x.shape[-1]
    kernel, width = sinc_resample_kernel(orig, new, dtype=x.dtype)
    y = F.conv1d(F.pad(x, (width, width + orig))[:, None], kernel, stride=orig)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)[..., : resampled_length(n, orig, new)]
    return y.reshape(*shape[:-1], -1).numpy()


def check_rate(sr) -> int:
    """The sample rate as an int; ``ValueError`` for a rate that is not a whole number of Hz or is below
    ``MIN_INPUT_RATE`` (the speech tokenizer's input check)."""
    if isinstance(sr, float) and sr.is_integer():
        sr = int(sr)
    if not isinstance(sr, (int, np.integer)) or isinstance(sr, bool):
        raise ValueError(f"sample rate must be a whole number of Hz, got {sr!r}")
    if sr < MIN_INPUT_RATE:
        raise ValueError(f"cannot handle audio at {sr} Hz (need at least {MIN_INPUT_RATE} Hz)")
    return int(sr)


def resample_to_16k(audio: np.ndarray, sr: int) -> np.ndarray:
    """Float32 audio at ``sr`` Hz → 16 kHz with SpiritLM's resampler (:func:`resample`); identity at 16 kHz.

    The one resampler of the project: synthesis, user recordings and the speech tokenizer all use it."""
    x = np.asarray(audio, dtype=np.float32)
    if sr == TARGET_SR:
        return x
    return resample(x, sr, TARGET_SR)


def write_wav16(path: str | Path, audio: np.ndarray, sr: int = TARGET_SR) -> None:
    """Write mono 16-bit PCM; ``audio`` is float in [-1, 1] (clipped) at ``sr`` (must be 16 kHz)."""
    if sr != TARGET_SR:
        raise ValueError(f"write_wav16 writes 16 kHz audio; resample {sr} Hz first")
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError("mono audio expected")
    pcm = np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(sr)
        wf.writeframes(pcm.tobytes())


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Float32 mono audio and its sample rate (soundfile; no ffmpeg needed)."""
    import soundfile as sf

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return x.mean(axis=1).astype(np.float32), int(sr)
