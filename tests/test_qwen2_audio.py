"""Qwen2-Audio as a speech family (crosstrace.models.qwen2_audio) on a tiny random model in the real format:
loading, prompts, the merged input embeddings against transformers' own forward pass, seconds → audio
positions, the three engines from input embeddings, and the bad inputs."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from qwen2audio_fixture import tone_clip

from crosstrace.config import ModelSpec
from crosstrace.models.family import load, prepare
from crosstrace.models.loading import ModelLoadError
from crosstrace.models.qwen2_audio import Template, audio_rate, load_qwen2_audio, n_audio_positions
from crosstrace.models.speech_family import (
    AudioInputError,
    LMInput,
    SpeechLM,
    SpokenPrompt,
    input_embeddings,
    speech_family,
)
from crosstrace.speech.units import UnitSpanError, frames_to_dedup_positions, seconds_to_frames
from crosstrace.trace import NoiseConfig, Tracer, TraceSettings
from crosstrace.trace.noise import vectors_std
from crosstrace.vocabulary import KINDS

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPT, SUBJECT = "The capital of France is", "France"


def _spec(path, **kw) -> ModelSpec:
    return ModelSpec.from_dict({"name": "tiny-qwen2-audio", "family": "qwen2-audio", "path": str(path), **kw})


@pytest.fixture(scope="module")
def lm(qwen2audio_dir):
    spec = _spec(qwen2audio_dir)
    return load(replace(spec, resolved=prepare(spec)))


@pytest.fixture(scope="module")
def chat(qwen2audio_dir):
    return load_qwen2_audio(qwen2audio_dir, template=Template("Answer briefly. {prompt} The answer is", chat=True))


def transformers_logits(lm, inp) -> torch.Tensor:
    """``Qwen2AudioForConditionalGeneration``'s own forward pass on the ids and log-mel features."""
    ids = torch.tensor([inp.input_ids])
    f = inp.features
    with torch.no_grad():
        return lm.full(input_ids=ids, attention_mask=torch.ones_like(ids), input_features=f["input_features"],
                       feature_attention_mask=f["feature_attention_mask"]).logits[0]


def audio_positions(grid, t_start: float, t_end: float) -> tuple[int, int]:
    """Seconds → LM positions through a family's grid: paper eq. 2 and the run lengths (crosstrace.speech.units)."""
    grid.check_inside(t_start, t_end)
    f_a, f_end = seconds_to_frames(t_start, t_end, grid.n_frames, grid.rate)
    r_a, r_end = frames_to_dedup_positions(f_a, f_end, grid.run_lengths)
    return grid.offset + r_a, grid.offset + r_end


# ------------------------------------------------------------------------------------------ loading, prompts


def test_family_is_found_by_name_and_loads_from_the_folder(lm, qwen2audio_dir):
    assert speech_family("qwen2-audio").name == "qwen2-audio"
    assert isinstance(lm, SpeechLM) and lm.family == "qwen2-audio" and lm.speech_input == "waveform"
    assert prepare(_spec(qwen2audio_dir)) == str(qwen2audio_dir)
    assert prepare(_spec("Qwen/Qwen2-Audio-7B")) == "Qwen/Qwen2-Audio-7B"  # a hub id is passed through
    assert lm.model.config.model_type == "qwen2" and type(lm.model).__name__ == "Qwen2ForCausalLM"
    # the traced LM shares the loaded weights (no copy)
    assert lm.model.get_input_embeddings().weight is lm.full.model.language_model.embed_tokens.weight
    assert lm.model.lm_head.weight is lm.full.lm_head.weight
    assert lm.rate == 25.0 and lm.window_samples == 480_000


def test_default_templates_and_last_tokens(lm):
    assert lm.s2t_text == "<|audio_bos|><|AUDIO|><|audio_eos|>"
    enc = lm.t2t(PROMPT, SUBJECT)
    assert enc.input_ids == lm.tokenizer(PROMPT)["input_ids"]  # T→T: the prompt text alone
    assert lm.tokenizer.decode(enc.input_ids[slice(*enc.subject_span)]) == " France"
    assert lm.text_tokens(PROMPT, SUBJECT) == enc
    inp = lm.s2t(tone_clip(1.0))
    tokens = lm.tokenizer.convert_ids_to_tokens(inp.input_ids)
    assert tokens[0] == "<|audio_bos|>" and tokens[inp.last] == "<|audio_eos|>"  # S→T's last token
    assert set(tokens[1:-1]) == {"<|AUDIO|>"} and list(inp.audio.positions) == list(range(1, inp.last))


def test_template_with_text_around_the_prompt(qwen2audio_dir):
    lm = load_qwen2_audio(qwen2audio_dir, template=Template("Q: {prompt} A:"))
    assert lm.s2t_text == "Q: <|audio_bos|><|AUDIO|><|audio_eos|> A:"
    enc = lm.t2t(PROMPT, SUBJECT)
    assert enc.input_ids == lm.tokenizer("Q: " + PROMPT + " A:")["input_ids"]
    assert lm.tokenizer.decode(enc.input_ids[slice(*enc.subject_span)]) == " France"
    text = lm.text_tokens(PROMPT, SUBJECT)
    assert lm.tokenizer.decode(text.input_ids).strip() == PROMPT  # the tokens that carry the prompt, no template
    assert lm.tokenizer.decode(text.input_ids[slice(*text.subject_span)]) == " France"
    inp = lm.s2t(tone_clip(1.0))
    assert lm.tokenizer.decode(inp.input_ids[inp.audio.offset + inp.audio.n_positions:]) == "<|audio_eos|> A:"
    with pytest.raises(ValueError, match="exactly once"):
        Template("no slot")


def test_chat_template_renders_both_modalities(chat):
    assert chat.s2t_text.endswith("<|im_start|>assistant\n")
    assert "Answer briefly. Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n The answer is<|im_end|>" in chat.s2t_text
    head, tail = chat.t2t_around
    assert head.endswith("<|im_start|>user\nAnswer briefly. ") and tail.startswith(" The answer is<|im_end|>")
    enc = chat.t2t(PROMPT, SUBJECT)
    assert chat.tokenizer.decode(enc.input_ids[slice(*enc.subject_span)]) == " France"
    assert chat.tokenizer.convert_ids_to_tokens(enc.input_ids[-1]) == "Ċ"  # the assistant header's newline is last
    with pytest.raises(ValueError, match="chat template writes the audio"):
        Template(audio="<|AUDIO|>", chat=True)


# ---------------------------------------------------------------------------- merged embeddings = transformers


@pytest.mark.parametrize("which", ["base", "chat"])
def test_clean_logits_equal_transformers_forward(lm, chat, which):
    m = lm if which == "base" else chat
    inp = m.s2t(tone_clip(2.3))
    x = m.inputs_embeds(inp)
    with torch.no_grad():
        ours = m.model(inputs_embeds=x[None]).logits[0]
    ref = transformers_logits(m, inp)
    assert ours.shape == ref.shape and inp.audio.n_positions == 57
    assert (ours - ref).abs().max().item() <= 1e-5
    # the text positions hold the token embeddings, the audio positions the projected frames (not the placeholder's)
    emb = m.model.get_input_embeddings().weight
    text = [i for i in range(len(inp.input_ids)) if i not in inp.audio.positions]
    assert torch.equal(x[text], emb[torch.tensor(inp.input_ids)[text]])
    assert not torch.allclose(x[inp.audio.offset], emb[m.audio_token_id])


def test_t2t_logits_equal_transformers_forward(lm):
    ids = torch.tensor([lm.t2t(PROMPT).input_ids])
    assert lm.inputs_embeds(lm.s2t(tone_clip(0.5))) is not None
    with torch.no_grad():
        assert (lm.model(input_ids=ids).logits - lm.full(input_ids=ids).logits).abs().max().item() <= 1e-5


# ---------------------------------------------------------------------------------------- seconds → positions


def test_seconds_to_audio_positions_hand_built(lm):
    """A 2.5023 s clip (40 037 samples): ceil(40037 / 160) = 251 mel frames → (251 − 1) // 2 + 1 = 126 conv frames
    → (126 − 2) // 2 + 1 = 63 audio positions at 25 Hz (LM positions 1..63 after <|audio_bos|>)."""
    inp = lm.s2t(SpokenPrompt(samples=tone_clip(40037 / 16000)))
    assert int(inp.features["feature_attention_mask"].sum()) == 251
    assert inp.audio.n_positions == 63 == n_audio_positions(lm.full.model.audio_tower, 251)
    assert inp.input_ids.count(lm.audio_token_id) == 63 and inp.audio.offset == 1 and len(inp.input_ids) == 65
    assert inp.audio.seconds == pytest.approx(2.52)
    # known word times (as an aligner gives them) → eq. 2 frames at 25 Hz → positions offset + frame
    words = {"The": (0.12, 0.31), "capital": (0.31, 0.80), "of": (0.80, 0.93), "France": (0.93, 1.46), "is": (1.46, 1.62)}
    expected = {"The": (4, 9), "capital": (8, 21), "of": (21, 25), "France": (24, 38), "is": (37, 42)}
    assert {w: audio_positions(inp.audio, *t) for w, t in words.items()} == expected
    # a word that runs into the padding is clipped to the 63 real positions; one that starts there is refused
    assert audio_positions(inp.audio, 2.40, 2.55) == (61, 64)
    with pytest.raises(AudioInputError, match=r"starts after the last real audio frame \(63 frames at 25 Hz = 2.520 s\)"):
        audio_positions(inp.audio, 2.53, 2.70)
    with pytest.raises(UnitSpanError):  # eq. 2 itself gives such a span no frame
        seconds_to_frames(2.53, 2.70, inp.audio.n_frames, inp.audio.rate)


def test_audio_rate_is_read_from_the_feature_extractor_and_the_encoder(lm):
    from transformers import WhisperFeatureExtractor

    tower = lm.full.model.audio_tower
    assert audio_rate(lm.processor.feature_extractor, tower) == 25.0
    assert audio_rate(WhisperFeatureExtractor(feature_size=128, hop_length=320), tower) == 12.5


def test_noise_basis_is_the_merged_embeddings_at_the_subject(lm):
    inp = lm.s2t(tone_clip(2.0))
    b, e = audio_positions(inp.audio, 0.5, 1.1)
    x = input_embeddings(lm, inp)
    assert torch.equal(x, lm.inputs_embeds(inp))
    assert vectors_std([x[b:e]]) == pytest.approx(float(x[b:e].double().std()), rel=1e-12)
    # T→T (no features): the embeddings of the ids, as for every text model
    t2t = lm.t2t(PROMPT)
    emb = lm.model.get_input_embeddings().weight
    assert torch.equal(input_embeddings(lm, LMInput(t2t.input_ids)), emb[torch.tensor(t2t.input_ids)])


# -------------------------------------------------------------------------------------- engines from embeddings


def _tracer(lm, engine: str, answer: str = "top1", noise_std: float = 0.5) -> Tracer:
    settings = TraceSettings(kinds=KINDS, window=2, noise=NoiseConfig(samples=3, multiple=3.0), engine=engine,
                             answer=answer)
    return Tracer(lm.model, lm.tokenizer, settings, noise_std=noise_std)


@pytest.mark.parametrize("answer", ["top1", "attribute_full"])
def test_reference_and_fast_agree_from_input_embeddings(lm, answer):
    inp = lm.s2t(tone_clip(2.0))
    x = lm.inputs_embeds(inp)
    span = audio_positions(inp.audio, 0.5, 1.1)
    attribute = None
    if answer != "top1":  # the model's own greedy two tokens, so P[o] is large enough to compare
        with torch.no_grad():
            first = int(lm.model(inputs_embeds=x[None]).logits[0, -1].argmax())
            nxt = torch.cat([x, lm.model.get_input_embeddings().weight[first][None]])
            attribute = [first, int(lm.model(inputs_embeds=nxt[None]).logits[0, -1].argmax())]
    ref = _tracer(lm, "reference", answer).trace_ids(7, inp.input_ids, span, attribute_ids=attribute, inputs_embeds=x)
    fast = _tracer(lm, "fast", answer).trace_ids(7, inp.input_ids, span, attribute_ids=attribute, inputs_embeds=x)
    assert len(inp.input_ids) == 52 and span == (13, 29)
    assert ref.p_clean == pytest.approx(fast.p_clean, abs=1e-6) and ref.p_corrupted == pytest.approx(fast.p_corrupted, abs=1e-6)
    assert abs(ref.p_clean - ref.p_corrupted) > 1e-3  # the corruption does something
    for kind in KINDS:
        np.testing.assert_allclose(fast.kinds[kind].p_restored, ref.kinds[kind].p_restored, rtol=0, atol=1e-6)
        assert np.abs(ref.kinds[kind].ie[span[0]:]).max() > 5e-5  # restorations move P[o] (50× the tolerance)
        assert np.all(ref.kinds[kind].ie[: span[0]] == 0)  # before the subject nothing is corrupted
    # the clean run is the model's own: P_clean from transformers' forward pass
    if answer == "top1":
        p = transformers_logits(lm, inp)[-1].softmax(-1)
        assert ref.answer_id == int(p.argmax()) and ref.p_clean == pytest.approx(float(p.max()), abs=1e-6)


def test_atp_runs_from_input_embeddings(lm):
    inp = lm.s2t(tone_clip(2.0))
    span = audio_positions(inp.audio, 0.5, 1.1)
    x = lm.inputs_embeds(inp)
    ref = _tracer(lm, "reference").trace_ids(7, inp.input_ids, span, inputs_embeds=x)
    atp = _tracer(lm, "atp").trace_ids(7, inp.input_ids, span, inputs_embeds=x)
    assert atp.p_clean == pytest.approx(ref.p_clean, abs=1e-6) and atp.p_corrupted == pytest.approx(ref.p_corrupted, abs=1e-6)
    for kind in KINDS:
        ie = atp.kinds[kind].ie
        assert ie.shape == ref.kinds[kind].ie.shape and np.isfinite(ie).all() and np.all(ie[: span[0]] == 0)
    # first order: the hidden estimate at the last subject position tracks the exact IE in sign
    assert np.corrcoef(atp.kinds["hidden"].ie[span[0]:].ravel(), ref.kinds["hidden"].ie[span[0]:].ravel())[0, 1] > 0.5


def test_noise_lands_on_the_input_embeddings_at_the_span(lm):
    """The corrupted run is the model's own forward pass on embeddings + ν·ε at the subject's positions."""
    inp = lm.s2t(tone_clip(1.2))
    x = lm.inputs_embeds(inp)
    span = audio_positions(inp.audio, 0.2, 0.6)
    tracer = _tracer(lm, "reference")
    eps = torch.randn(3, span[1] - span[0], x.shape[1], generator=torch.Generator().manual_seed(1))
    tr = tracer.trace_ids(3, inp.input_ids, span, noise=eps, inputs_embeds=x)
    rows = x[None].repeat(3, 1, 1)
    rows[:, span[0]:span[1]] += tracer.noise_scale * eps
    with torch.no_grad():
        p = lm.model(inputs_embeds=rows).logits[:, -1].softmax(-1)[:, tr.answer_id].double().mean()
    assert tr.p_corrupted == pytest.approx(float(p), abs=1e-6)


# ---------------------------------------------------------------------------------------------- bad inputs


def test_clip_longer_than_the_encoder_window_is_refused(lm):
    with pytest.raises(AudioInputError, match=r"^the clip is 30.50 s, longer than the audio encoder's 30 s window"):
        lm.s2t(np.zeros(int(30.5 * 16000), dtype=np.float32))
    assert lm.s2t(np.zeros(480_000, dtype=np.float32)).audio.n_positions == 750  # exactly 30 s fits: 30 × 25
    with pytest.raises(AudioInputError, match="needs the clip's waveform"):
        lm.s2t(SpokenPrompt(units=[1, 2], run_lengths=[1, 1]))
    with pytest.raises(AudioInputError, match="NaN or infinite"):
        lm.s2t(np.full(1600, np.nan, dtype=np.float32))
    # another sampling rate is resampled to the feature extractor's 16 kHz first: 1 s at 8 kHz = 25 positions
    assert lm.s2t(tone_clip(1.0, sr=8000), sampling_rate=8000).audio.n_positions == 25


def test_processor_whose_audio_token_is_missing_from_the_tokenizer(qwen2audio_dir, tmp_path):
    bad = tmp_path / "bad-processor"
    shutil.copytree(qwen2audio_dir, bad)
    cfg = json.loads((bad / "processor_config.json").read_text())
    (bad / "processor_config.json").write_text(json.dumps({**cfg, "audio_token": "<|SPEECH|>"}))
    with pytest.raises(ModelLoadError, match=r"the processor's audio token '<\|SPEECH\|>' is missing from the tokenizer"):
        load_qwen2_audio(bad)


def test_model_folder_of_another_family_is_refused(tmp_path, ckpt, tiny_model_dir):
    llama = tiny_model_dir
    with pytest.raises(ModelLoadError, match=r"model_type 'llama' is not a Qwen2-Audio model \('qwen2_audio'\)") as e:
        prepare(_spec(llama))
    assert "\n" not in str(e.value)
    with pytest.raises(ModelLoadError, match="model_type 'llama' is not a Qwen2-Audio model"):
        load_qwen2_audio(llama)
    with pytest.raises(ModelLoadError, match="no config.json"):  # a SpiritLM checkpoint root
        prepare(_spec(ckpt["root"]))
    with pytest.raises(ModelLoadError, match="does not exist"):
        prepare(_spec(tmp_path / "missing"))


def test_spiritlm_family_refuses_a_qwen2_audio_folder(qwen2audio_dir):
    spec = ModelSpec.from_dict({"name": "x", "family": "spiritlm", "path": str(qwen2audio_dir)})
    with pytest.raises(ModelLoadError, match="missing SpiritLM file"):
        prepare(spec)
