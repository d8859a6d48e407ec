"""crosstrace's HuBERT loader and speech tokenizer against fairseq's own HuBERT (fairseq-fixed 0.12.3.1).

The fixture (tests/fixtures/fairseq_hubert/, made by make_fairseq_fixture.py beside it in a scratch
environment) is a random-weight HuBERT that fairseq built and saved in SpiritLM's checkpoint format, with the
25 Hz conv stack, plus fairseq's ``extract_features(output_layer=11)`` for two fixed clips and the units of a
random linear quantizer applied to them. Measured with the pinned torch (1 or 2 threads): layer-11 features
differ from fairseq's by at most 1.8e-6 (clip32) and 1.7e-6 (clip49), on values up to 4.9; the test allows 5e-6.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from crosstrace.models.hubert import CheckpointError, SpeechTokenizer, receptive_field

FIX = Path(__file__).resolve().parent / "fixtures" / "fairseq_hubert"
sys.path.insert(0, str(FIX))
from make_fairseq_fixture import waveforms  # noqa: E402

REF = np.load(FIX / "reference.npz")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return SpeechTokenizer(FIX / "mhubert_base_25hz.pt", FIX / "L11_quantizer_500.pt")


def test_fixture_is_fairseqs_format_with_the_25hz_stack(tok):
    raw = torch.load(FIX / "mhubert_base_25hz.pt", weights_only=True)
    assert set(raw) == {"model_cfg", "task_cfg", "model_weight", "dictionaries_symbols"}
    assert raw["model_cfg"]["conv_feature_layers"] == "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 3"
    assert raw["task_cfg"]["normalize"] is False and "label_embs_concat" in raw["model_weight"]
    assert tok.hop == 640 and receptive_field(tok.kernels, tok.strides) == 720
    assert sum(f.stat().st_size for f in FIX.iterdir()) < 5_000_000


@pytest.mark.parametrize("name", sorted(waveforms()))
def test_features_match_fairseq(tok, name):
    wav = waveforms()[name]
    ref = REF[f"{name}_features"]
    ours = tok.features(wav).numpy()
    assert ours.shape == ref.shape == (tok.n_frames(len(wav)), 64)
    assert float(np.max(np.abs(ours - ref))) <= 5e-6


@pytest.mark.parametrize("name", sorted(waveforms()))
def test_units_identical_through_the_quantizer(tok, name):
    ref = REF[f"{name}_units"].tolist()
    assert len(set(ref)) > 8  # a meaningful comparison: the units vary (and a fifth of the frames were blank)
    assert tok.encode(waveforms()[name], 16000).units == ref


def test_normalize_true_is_a_clear_error(tmp_path):
    raw = torch.load(FIX / "mhubert_base_25hz.pt", weights_only=True)
    raw["task_cfg"]["normalize"] = True
    torch.save(raw, tmp_path / "mhubert_base_25hz.pt")
    shutil.copy(FIX / "L11_quantizer_500.pt", tmp_path / "L11_quantizer_500.pt")
    with pytest.raises(CheckpointError, match="normalize=True is not supported"):
        SpeechTokenizer(tmp_path / "mhubert_base_25hz.pt", tmp_path / "L11_quantizer_500.pt")
