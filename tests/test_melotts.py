"""The ``melotts`` TTS backend end to end on a STAND-IN ``melo.api.TTS``.

MeloTTS (the paper's synthesiser) cannot be installed in crosstrace's environment: its PyPI sdist does not
build and ``melo.api`` imports torchaudio, which has no wheel for the pinned torch (docs/paper-run.md). So
these tests write a stand-in ``melo`` package whose ``TTS`` has the real method names, signatures and
return types, checked here against ``tests/fixtures/melotts/melo_api.json`` (read from MeloTTS's own source
by ``make_melo_api.py``). Its audio is a tone whose pitch encodes the speaker id, so the speaker lookup,
the 44.1 kHz → 16 kHz resampling and the empty-text refusal are checked on real numbers, in this process
and through the worker that runs MeloTTS in its own venv (``speech.tts.options.python``).
"""

from __future__ import annotations

import inspect
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from crosstrace.audio import resample_to_16k
from crosstrace.speech.tts import MELO_INSTALL, TTSError, get_backend

FIXTURE = json.loads((Path(__file__).resolve().parent / "fixtures" / "melotts" / "melo_api.json").read_text())
PROMPT = "Vinson Massif is located in the continent of"

STANDIN = '''
"""STAND-IN for MeloTTS's melo.api (tests/test_melotts.py): not MeloTTS. Same names, signatures and return
types as its TTS and HParams; the audio is a tone at 220 Hz x (speaker id + 1)."""
import numpy as np

CALLS = []


class HParams:
    """Stand-in for melo.utils.HParams: nested dicts become attributes; [] is getattr (a missing name raises
    AttributeError), `in` looks at the attributes."""

    def __init__(self, **kwargs):
        for k, v in kwargs.items():
            setattr(self, k, HParams(**v) if isinstance(v, dict) else v)

    def keys(self):
        return self.__dict__.keys()

    def items(self):
        return self.__dict__.items()

    def values(self):
        return self.__dict__.values()

    def __len__(self):
        return len(self.__dict__)

    def __getitem__(self, key):
        return getattr(self, key)

    def __setitem__(self, key, value):
        return setattr(self, key, value)

    def __contains__(self, key):
        return key in self.__dict__

    def __repr__(self):
        return repr(self.__dict__)


class TTS:
    def __init__(self, language, device='auto', use_hf=True, config_path=None, ckpt_path=None):
        self.hps = HParams(data={"sampling_rate": 44100,
                                 "spk2id": {"EN-US": 0, "EN-BR": 1, "EN_INDIA": 2, "EN-AU": 3, "EN-Default": 4}})
        self.language, self.device, self.model, self.symbol_to_id = language, device, None, {}

    def tts_to_file(self, text, speaker_id, output_path=None, sdp_ratio=0.2, noise_scale=0.6, noise_scale_w=0.8,
                    speed=1.0, pbar=None, format=None, position=None, quiet=False):
        CALLS.append((text, speaker_id, speed))
        return tone(text, speaker_id, speed, self.hps.data.sampling_rate)


def tone(text, speaker_id, speed, sr):
    """0.1 s per word at speed 1, then the 50 ms of silence MeloTTS appends to each sentence; float32 1-D."""
    n = int(sr * 0.1 * len(text.split()) / speed)
    audio = 0.3 * np.sin(2 * np.pi * 220.0 * (speaker_id + 1) * np.arange(n) / sr)
    return np.concatenate([audio, np.zeros(int(sr * 0.05 / speed))]).astype(np.float32)
'''


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """The stand-in ``melo`` package on sys.path (and PYTHONPATH, for the worker); its ``api`` module."""
    pkg = tmp_path / "standin" / "melo"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""STAND-IN for MeloTTS (tests/test_melotts.py)."""\n')
    (pkg / "api.py").write_text(textwrap.dedent(STANDIN))
    monkeypatch.syspath_prepend(str(pkg.parent))
    monkeypatch.setenv("PYTHONPATH", str(pkg.parent))
    for name in ("melo", "melo.api"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import melo.api

    yield melo.api
    for name in ("melo", "melo.api"):
        sys.modules.pop(name, None)


def params(fn) -> list[list[str | None]]:
    return [[p.name, None if p.default is inspect.Parameter.empty else repr(p.default)]
            for p in inspect.signature(fn).parameters.values()]


def test_the_standin_has_melotts_own_api(standin):
    """Names, signatures and return types as in MeloTTS's source (the fixture records them)."""
    assert params(standin.TTS.__init__) == FIXTURE["TTS.__init__"]
    assert params(standin.TTS.tts_to_file) == FIXTURE["TTS.tts_to_file"]
    # without an output path tts_to_file returns audio_numpy_concat's float32 array
    assert FIXTURE["TTS.tts_to_file returns"] == [
        "audio = self.audio_numpy_concat(audio_list, sr=self.hps.data.sampling_rate, speed=speed)"]
    assert FIXTURE["TTS.audio_numpy_concat returns"] == ["audio_segments = np.array(audio_segments).astype(np.float32)"]
    tts = standin.TTS(language="EN", device="cpu")
    audio = tts.tts_to_file(PROMPT, 0, None, speed=1.0, quiet=True)
    assert isinstance(audio, np.ndarray) and audio.dtype == np.float32 and audio.ndim == 1
    assert all(hasattr(tts, a.removeprefix("self.")) for a in FIXTURE["TTS.__init__ sets"])
    hp = standin.HParams
    assert sorted(n for n, v in vars(hp).items() if inspect.isfunction(v)) == FIXTURE["HParams methods"]
    assert FIXTURE["HParams.__getitem__ returns"] == ["getattr(self, key)"]
    assert FIXTURE["HParams.__contains__ returns"] == ["key in self.__dict__"]
    spk2id = tts.hps.data.spk2id
    with pytest.raises(AttributeError):
        spk2id["EN-GB"]  # as in MeloTTS: a missing speaker is an AttributeError, not a KeyError
    assert sorted(spk2id.keys()) == sorted(FIXTURE["English speakers (install guide)"])
    assert tts.hps.data.sampling_rate == FIXTURE["data.sampling_rate"] == 44100


def expected(standin, speaker_id: int, speed: float = 1.0) -> np.ndarray:
    return resample_to_16k(standin.tone(PROMPT, speaker_id, speed, 44100), 44100)


def dominant_hz(audio: np.ndarray, sr: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(len(audio), 1 / sr)[int(np.argmax(spectrum))])


def test_melo_backend_speaker_lookup_and_resampling(standin):
    backend = get_backend("melotts", speaker="EN-BR", speed=1.25)
    syn = backend.synthesize(PROMPT)
    assert standin.CALLS == [(PROMPT, 1, 1.25)], "EN-BR is speaker id 1 of hps.data.spk2id"
    assert (syn.backend, syn.voice, syn.sample_rate, syn.word_timings) == ("melotts", "EN-BR", 16000, None)
    want = expected(standin, 1, 1.25)
    assert syn.audio.dtype == np.float32 and np.array_equal(syn.audio, want), "44.1 kHz → 16 kHz by resample_to_16k"
    # 8 words at 0.1 s / 1.25, plus 40 ms of silence: 0.68 s at 16 kHz
    assert len(syn.audio) == round(len(standin.tone(PROMPT, 1, 1.25, 44100)) * 16000 / 44100) == 10880
    assert abs(dominant_hz(syn.audio) - 440.0) < 2.0


def test_melo_backend_unknown_speaker_names_the_speakers(standin):
    with pytest.raises(TTSError) as e:
        get_backend("melotts", speaker="EN-GB")
    assert str(e.value) == ("MeloTTS EN has no speaker 'EN-GB'; its speakers are ['EN-AU', 'EN-BR', 'EN-Default', "
                            "'EN-US', 'EN_INDIA'] (speech.tts.options.speaker)")


@pytest.mark.parametrize("text", ["", "   \t"])
def test_melo_backend_refuses_empty_text_before_melotts_sees_it(standin, text):
    backend = get_backend("melotts")
    with pytest.raises(TTSError, match="^empty text$"):
        backend.synthesize(text)
    assert standin.CALLS == []


def test_melo_backend_in_its_own_venv_through_the_worker(standin):
    """speech.tts.options.python: MeloTTS runs in that interpreter (here this one, with the stand-in on
    PYTHONPATH); the audio is the same as in-process, and so are the refusals."""
    backend = get_backend("melotts", speaker="EN-US", python=sys.executable)
    try:
        syn = backend.synthesize(PROMPT)
        assert np.array_equal(syn.audio, expected(standin, 0)) and abs(dominant_hz(syn.audio) - 220.0) < 2.0
        with pytest.raises(TTSError, match="^empty text$"):
            backend.synthesize(" ")
    finally:
        backend._melo.close()
    with pytest.raises(TTSError, match=r"^MeloTTS EN has no speaker 'EN-GB'; its speakers are \['EN-AU'"):
        get_backend("melotts", speaker="EN-GB", python=sys.executable)


def test_missing_melotts_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "melo", raising=False)  # not installed in crosstrace's venv
    with pytest.raises(TTSError) as e:
        get_backend("melotts")
    assert str(e.value) == f"MeloTTS is not installed here (ModuleNotFoundError: No module named 'melo'); {MELO_INSTALL}"
    assert "https://github.com/myshell-ai/MeloTTS" in MELO_INSTALL and "python -m unidic download" in MELO_INSTALL
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # a python without melo
    with pytest.raises(TTSError) as e:
        get_backend("melotts", python=sys.executable)
    assert str(e.value).startswith(f"MeloTTS in {sys.executable} cannot start (ModuleNotFoundError: No module named 'melo'); "
                                   "its PyPI release")
    with pytest.raises(TTSError, match=r"^speech.tts.options.python: '/nonexistent/python' is not a Python interpreter"):
        get_backend("melotts", python="/nonexistent/python")
