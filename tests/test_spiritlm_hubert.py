"""Speech tokenizer: loader, features and units against an independent fairseq-style forward pass."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from spiritlm_fixture import TINY_CONV, build_tiny_spiritlm

from crosstrace.models.hubert import (
    CheckpointError,
    SpeechTokenizer,
    SpeechTokenizerError,
    fill_blanks,
    parse_conv_feature_layers,
    receptive_field,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt_wn(tmp_path_factory):
    return build_tiny_spiritlm(tmp_path_factory.mktemp("spiritlm_wn"), seed=3, conv_pos_batch_norm=False)


@pytest.fixture(scope="module")
def tok(ckpt):
    return SpeechTokenizer.from_checkpoints(ckpt["root"])


def speechlike(n: int, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Segments of different tones and noise levels, so frames differ and units vary."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    seg = (t * 6).astype(int)
    f = 150 + 90 * (seg % 7)
    amp = 0.05 + 0.3 * ((seg * 37) % 5) / 4
    return (amp * np.sin(2 * np.pi * f * t) + 0.02 * rng.standard_normal(n)).astype(np.float32)


# ----------------------------------------------------------- independent reference (plain torch, raw dict)


def reference_features(raw: dict, wav: np.ndarray, layer: int = 11) -> torch.Tensor:
    """fairseq HuBERT forward written from the spec on the raw pickle: conv stack (GroupNorm on conv 0),
    LayerNorm, projection, positional conv (batch- or weight-norm, 'same' padding minus the last frame,
    GELU), LayerNorm, post-LN layers; returns the output of transformer layer ``layer`` (1-based)."""
    cfg, task, sd = raw["model_cfg"], raw["task_cfg"], raw["model_weight"]
    x = torch.tensor(wav, dtype=torch.float32)
    if task["normalize"]:
        x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-5)
    x = x[None, None]
    for i, (c, _k, s) in enumerate(eval(cfg["conv_feature_layers"])):  # test-only: our own fixture string
        x = F.conv1d(x, sd[f"feature_extractor.conv_layers.{i}.0.weight"], stride=s)
        if i == 0:
            x = F.group_norm(x, c, sd["feature_extractor.conv_layers.0.2.weight"], sd["feature_extractor.conv_layers.0.2.bias"], 1e-5)
        x = F.gelu(x)
    x = x[0].T  # frames × channels
    x = F.layer_norm(x, x.shape[-1:], sd["layer_norm.weight"], sd["layer_norm.bias"], 1e-5)
    x = x @ sd["post_extract_proj.weight"].T + sd["post_extract_proj.bias"]
    K, G = cfg["conv_pos"], cfg["conv_pos_groups"]
    y = x.T[None]
    if cfg["conv_pos_batch_norm"]:
        y = (y - sd["encoder.pos_conv.0.running_mean"][:, None]) / torch.sqrt(sd["encoder.pos_conv.0.running_var"][:, None] + 1e-5)
        y = y * sd["encoder.pos_conv.0.weight"][:, None] + sd["encoder.pos_conv.0.bias"][:, None]
        w, b = sd["encoder.pos_conv.1.weight"], sd["encoder.pos_conv.1.bias"]
    else:
        v, g = sd["encoder.pos_conv.0.weight_v"], sd["encoder.pos_conv.0.weight_g"]
        w = g * v / v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()  # weight norm over all dims but 2
        b = sd["encoder.pos_conv.0.bias"]
    y = F.conv1d(y, w, b, padding=K // 2, groups=G)
    if K % 2 == 0:
        y = y[:, :, :-1]
    x = x + F.gelu(y)[0].T
    x = F.layer_norm(x, x.shape[-1:], sd["encoder.layer_norm.weight"], sd["encoder.layer_norm.bias"], 1e-5)
    H = cfg["encoder_attention_heads"]
    T, D = x.shape
    hd = D // H
    for n in range(layer):
        p = f"encoder.layers.{n}."

        def lin(name, inp, p=p):
            return inp @ sd[p + name + ".weight"].T + sd[p + name + ".bias"]

        q = lin("self_attn.q_proj", x).view(T, H, hd).transpose(0, 1) * hd**-0.5
        kk = lin("self_attn.k_proj", x).view(T, H, hd).transpose(0, 1)
        vv = lin("self_attn.v_proj", x).view(T, H, hd).transpose(0, 1)
        a = torch.softmax(q @ kk.transpose(1, 2), dim=-1) @ vv
        a = lin("self_attn.out_proj", a.transpose(0, 1).reshape(T, D))
        x = F.layer_norm(x + a, (D,), sd[p + "self_attn_layer_norm.weight"], sd[p + "self_attn_layer_norm.bias"], 1e-5)
        h = lin("fc2", F.gelu(lin("fc1", x)))
        x = F.layer_norm(x + h, (D,), sd[p + "final_layer_norm.weight"], sd[p + "final_layer_norm.bias"], 1e-5)
    return x


def reference_units(qraw: dict, feats: torch.Tensor) -> list[int]:
    sd = qraw["model_weight"]
    h = F.leaky_relu(feats @ sd["0.weight"].T + sd["0.bias"], 0.01)
    h = F.leaky_relu(h @ sd["2.weight"].T + sd["2.bias"], 0.01)
    logits = h @ sd["4.weight"].T + sd["4.bias"]
    units = torch.log_softmax(logits, dim=-1).argmax(-1).tolist()
    blank = qraw["model_cfg"]["vocab_size"]
    # plain loop: replace blanks by the previous frame's value (wrap-around), pass after pass
    for _ in range(10000):
        if blank not in units or all(u == blank for u in units):
            break
        units = [units[i - 1] if u == blank else u for i, u in enumerate(units)]
    return units


def test_features_match_reference_batch_norm_posconv(ckpt, tok):
    raw = torch.load(ckpt["hubert"], weights_only=True)
    wav = speechlike(16000 * 3 + 123)
    ours = tok.features(wav)
    ref = reference_features(raw, wav)
    assert ours.shape == ref.shape == (tok.n_frames(len(wav)), 16)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_features_match_reference_weight_norm_posconv(ckpt_wn):
    tok = SpeechTokenizer.from_checkpoints(ckpt_wn["root"])
    assert tok.model.config.conv_pos_batch_norm is False
    raw = torch.load(ckpt_wn["hubert"], weights_only=True)
    wav = speechlike(16000 * 2, seed=5) * 3 + 0.01
    torch.testing.assert_close(tok.features(wav), reference_features(raw, wav), atol=1e-5, rtol=0)


def test_normalize_true_is_refused(tmp_path):
    """SpiritLM's tokenizer cannot run a normalize=True checkpoint, so there is no reference to match: refuse."""
    paths = build_tiny_spiritlm(tmp_path / "norm", normalize=True)
    with pytest.raises(CheckpointError, match=r"mhubert_base_25hz.pt: task_cfg normalize=True is not supported"):
        SpeechTokenizer.from_checkpoints(paths["root"])


def test_full_model_hidden_state_11_is_layer_11(ckpt, tok):
    """Truncating the encoder to 11 layers does not change hidden_states[11] of the full 12-layer model."""
    from crosstrace.models.hubert import load_hubert

    full, _, _ = load_hubert(ckpt["hubert"])
    assert len(full.encoder.layers) == 12
    wav = torch.tensor(speechlike(9000))[None]
    with torch.no_grad():
        hs = full(wav, output_hidden_states=True).hidden_states
    torch.testing.assert_close(hs[11][0], tok.features(wav[0].numpy()), atol=0, rtol=0)


def test_units_match_reference(ckpt, tok):
    raw = torch.load(ckpt["hubert"], weights_only=True)
    qraw = torch.load(ckpt["quantizer"], weights_only=True)
    wav = speechlike(16000 * 4, seed=1)
    ref = reference_units(qraw, reference_features(raw, wav))
    out = tok.encode(wav, 16000)
    assert out.units == ref
    assert out.n_frames == len(ref) == tok.n_frames(len(wav))
    assert len(set(ref)) >= 3  # the fixture gives varied units
    # dedup keeps the first of each run
    dd = [u for i, u in enumerate(ref) if i == 0 or ref[i - 1] != u]
    assert out.dedup == dd and sum(out.run_lengths) == len(ref) and len(out.run_lengths) == len(dd)


def test_blank_filling():
    assert fill_blanks([500, 500, 4, 9], 500).tolist() == [9, 9, 4, 9]
    assert fill_blanks([500, 500, 500], 500).tolist() == [500, 500, 500]
    assert fill_blanks([3, 500, 500, 7, 500], 500).tolist() == [3, 3, 3, 7, 7]
    assert fill_blanks([500, 8], 500).tolist() == [8, 8]
    assert fill_blanks([], 500).tolist() == []


def test_blank_filling_inside_encode(ckpt, tok, monkeypatch):
    """Blanks produced by the quantizer are filled per chunk before deduplication."""
    n = tok.n_frames(16000)
    raw = np.array([500, 500, 4, 9] + [9] * (n - 4))
    monkeypatch.setattr(tok.quantizer, "units", lambda feats: torch.as_tensor(raw))
    out = tok.encode(np.zeros(16000, np.float32), 16000)
    assert out.units == [9, 9, 4, 9] + [9] * (n - 4)
    assert out.dedup == [9, 4, 9] and out.run_lengths == [2, 1, n - 3]
    monkeypatch.setattr(tok.quantizer, "units", lambda feats: torch.full((n,), 500))
    out = tok.encode(np.zeros(16000, np.float32), 16000)
    assert out.dedup == [500] and out.run_lengths == [n]


@pytest.mark.parametrize("n_samples", [720, 1280, 1359, 1360, 16000, 146160])
def test_frame_count(tok, n_samples):
    R = receptive_field(tok.kernels, tok.strides)
    assert R == 720 and tok.hop == 640
    expected = math.floor((n_samples - R) / 640) + 1
    assert tok.n_frames(n_samples) == expected
    if n_samples >= 1280:
        assert tok.encode(speechlike(n_samples), 16000).n_frames == expected
    assert tok.n_frames(146160) == 228  # the reference clip's 228 units


def test_short_and_empty_audio_give_zero_units_error(tok):
    with pytest.raises(SpeechTokenizerError, match="zero units"):
        tok.encode(np.zeros(0, np.float32), 16000)
    with pytest.raises(SpeechTokenizerError, match="zero units"):
        tok.encode(np.zeros(1279, np.float32), 16000)
    assert tok.encode(np.zeros(1280, np.float32), 16000).n_frames == 1


def test_chunking_drops_short_tail_and_restarts_frames(tok, monkeypatch):
    import crosstrace.models.hubert as hub

    monkeypatch.setattr(hub, "CHUNK_SAMPLES", 16000)
    wav = speechlike(16000 * 2 + 1000)  # two full chunks and a 1000-sample tail (dropped)
    out = tok.encode(wav, 16000)
    per = tok.n_frames(16000)
    assert out.chunk_frames == [per, per] and out.n_frames == 2 * per
    a = tok.chunk_units(wav[:16000]).tolist()
    b = tok.chunk_units(wav[16000:32000]).tolist()
    assert out.units == a + b


def test_stereo_mono_and_resampling(tok):
    wav = speechlike(16000)
    stereo = np.stack([wav, wav])
    assert tok.encode(stereo, 16000).units == tok.encode(wav, 16000).units
    assert tok.encode(stereo.T, 16000).units == tok.encode(wav, 16000).units
    pcm = (wav * 32767).astype(np.int16)
    assert tok.encode(pcm, 16000).n_frames == tok.n_frames(16000)
    out = tok.encode(speechlike(22050, sr=22050), 22050)  # 1 s at 22.05 kHz -> 16000 samples
    assert out.n_frames == tok.n_frames(16000)
    with pytest.raises(SpeechTokenizerError, match="unsigned"):
        tok.encode(np.zeros(16000, np.uint8), 16000)
    for bad in (0, -16000, 500, 16000.5, "16k"):
        with pytest.raises(SpeechTokenizerError, match="Hz"):
            tok.encode(wav, bad)


# --------------------------------------------------------------------------------------- loader errors


def test_conv_feature_layers_parsing_is_safe():
    assert parse_conv_feature_layers(TINY_CONV) == [(8, 10, 5)] + [(8, 3, 2)] * 4 + [(8, 2, 2)] * 3
    assert parse_conv_feature_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 3")[-1] == (512, 2, 2)
    for bad in ("__import__('os').system('true')", "[(1,2)]", "[(1,2,3)] * 'a'", "[x]", "[(1,2,3)] - []"):
        with pytest.raises(ValueError, match="conv_feature_layers"):
            parse_conv_feature_layers(bad)


def _resave(src: Path, dst: Path, edit) -> Path:
    obj = torch.load(src, weights_only=True)
    edit(obj)
    torch.save(obj, dst)
    return dst


def test_missing_files(tmp_path, ckpt):
    with pytest.raises(CheckpointError, match="HuBERT checkpoint not found: .*nothere.pt"):
        SpeechTokenizer(tmp_path / "nothere.pt", ckpt["quantizer"])
    with pytest.raises(CheckpointError, match="quantizer checkpoint not found: .*L11_quantizer_500.pt"):
        SpeechTokenizer.from_checkpoints(tmp_path) if False else SpeechTokenizer(ckpt["hubert"], tmp_path / "L11_quantizer_500.pt")


def test_unexpected_key(tmp_path, ckpt):
    p = _resave(ckpt["hubert"], tmp_path / "h.pt", lambda o: o["model_weight"].__setitem__("encoder.layers.0.adapter.weight", torch.zeros(2)))
    with pytest.raises(CheckpointError, match=r"h\.pt: unexpected key 'encoder\.layers\.0\.adapter\.weight'"):
        SpeechTokenizer(p, ckpt["quantizer"])
    q = _resave(ckpt["quantizer"], tmp_path / "q.pt", lambda o: o["model_weight"].__setitem__("6.weight", torch.zeros(2)))
    with pytest.raises(CheckpointError, match=r"q\.pt: unexpected key '6\.weight'"):
        SpeechTokenizer(ckpt["hubert"], q)


def test_missing_key(tmp_path, ckpt):
    p = _resave(ckpt["hubert"], tmp_path / "h.pt", lambda o: o["model_weight"].pop("encoder.layers.3.fc1.bias"))
    with pytest.raises(CheckpointError, match=r"h\.pt: model_weight lacks tensors for \['encoder\.layers\.3\.feed_forward\.intermediate_dense\.bias'\]"):
        SpeechTokenizer(p, ckpt["quantizer"])
    q = _resave(ckpt["quantizer"], tmp_path / "q.pt", lambda o: o["model_weight"].pop("2.bias"))
    with pytest.raises(CheckpointError, match=r"q\.pt: model_weight lacks key '2\.bias'"):
        SpeechTokenizer(ckpt["hubert"], q)
    m = _resave(ckpt["hubert"], tmp_path / "m.pt", lambda o: o.pop("model_cfg"))
    with pytest.raises(CheckpointError, match=r"m\.pt: missing top-level key\(s\) \['model_cfg'\]"):
        SpeechTokenizer(m, ckpt["quantizer"])


def test_wrong_shape(tmp_path, ckpt):
    def edit(o):
        o["model_weight"]["encoder.layers.2.self_attn.q_proj.weight"] = torch.zeros(16, 17)

    p = _resave(ckpt["hubert"], tmp_path / "h.pt", edit)
    with pytest.raises(CheckpointError, match=r"h\.pt: key 'encoder\.layers\.2\.self_attn\.q_proj\.weight' has shape \(16, 17\)"):
        SpeechTokenizer(p, ckpt["quantizer"])

    def qedit(o):
        o["model_weight"]["4.weight"] = torch.zeros(500, o["model_weight"]["4.weight"].shape[1])
        o["model_weight"]["4.bias"] = torch.zeros(500)

    q = _resave(ckpt["quantizer"], tmp_path / "q.pt", qedit)
    with pytest.raises(CheckpointError, match=r"q\.pt: key '4\.weight' has 500 outputs, expected vocab_size \+ 1 = 501"):
        SpeechTokenizer(ckpt["hubert"], q)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_not_a_weights_only_pickle(tmp_path, ckpt):
    import pickle

    p = tmp_path / "evil.pt"
    p.write_bytes(pickle.dumps(object()))
    with pytest.raises(CheckpointError, match="evil.pt: cannot be read as a weights-only torch pickle"):
        SpeechTokenizer(p, ckpt["quantizer"])


def test_encode_file_wav(tmp_path, tok):
    import soundfile as sf

    wav = speechlike(16000)
    sf.write(tmp_path / "a.wav", (wav * 32767).astype(np.int16), 16000, subtype="PCM_16")
    out = tok.encode_file(tmp_path / "a.wav")
    assert out.n_samples == 16000 and out.n_frames == tok.n_frames(16000)
    assert out.units == tok.encode(np.round(wav * 32767) / 32768, 16000).units
    with pytest.raises(SpeechTokenizerError, match="not found"):
        tok.encode_file(tmp_path / "missing.wav")
