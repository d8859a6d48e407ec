"""The fast engine equals the plain algorithm; the plain algorithm has the properties the method implies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import greedy_tokens, tiny_gpt2, tiny_llama

from crosstrace.models.adapter import get_adapter, window_layers
from crosstrace.trace.fast import LlamaRunner, trace_fast
from crosstrace.trace.noise import draw_noise
from crosstrace.trace.reference import trace_reference
from crosstrace.trace.state import Corruption

KINDS = ("hidden", "mlp", "attn")


def _case(model, T: int, span: tuple[int, int], samples: int = 3, scale: float = 0.5, seed: int = 1):
    torch.manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (T,))
    noise = scale * draw_noise(seed, 7, samples, span[1] - span[0], model.config.hidden_size)
    return ids, Corruption(span, noise)


@pytest.fixture(scope="module")
def llama():
    return tiny_llama()


def test_runner_full_pass_equals_hf_forward(llama):
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        hf = llama(input_ids=ids, output_hidden_states=True)
        run = LlamaRunner(llama, get_adapter(llama), 9, ids.device, torch.float32).full(llama.model.embed_tokens(ids))
    for k in range(6):
        torch.testing.assert_close(run.block_in[k], hf.hidden_states[k], atol=1e-6, rtol=0)
    torch.testing.assert_close(llama.model.norm(run.final), hf.hidden_states[-1], atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "T,span,window",
    [
        (8, (2, 5), 3),  # subject in the middle, windows clipped at both ends of 6 layers
        (7, (0, 1), 4),  # single-token subject at the start
        (6, (4, 6), 10),  # subject at the end; window wider than the model
        (5, (1, 2), 1),  # window 1: only the layer itself
    ],
)
def test_fast_equals_reference(llama, T, span, window):
    ids, corruption = _case(llama, T, span)
    ad = get_adapter(llama)
    ref = trace_reference(llama, ad, ids, corruption, KINDS, window)
    fast = trace_fast(llama, ad, ids, corruption, KINDS, window)
    for kind in KINDS:
        assert fast[kind].answer_id == ref[kind].answer_id
        assert fast[kind].p_clean == pytest.approx(ref[kind].p_clean, abs=1e-6)
        assert fast[kind].p_corrupted == pytest.approx(ref[kind].p_corrupted, abs=1e-6)
        np.testing.assert_allclose(fast[kind].ie, ref[kind].ie, atol=1e-6, rtol=0)
    # the case must actually exercise something: corruption moves the answer probability
    assert abs(ref["hidden"].p_clean - ref["hidden"].p_corrupted) > 1e-3


def _tiny(family: str):
    """Other families the fast engine takes: Qwen2 (biased q/k/v) and Mistral (sliding window)."""
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    if family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common)).eval()
        assert model.model.layers[0].self_attn.q_proj.bias is not None
    else:
        model = MistralForCausalLM(MistralConfig(sliding_window=3, **common)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
        if family == "qwen2":  # random init leaves biases at zero; make them matter
            for layer in model.model.layers:
                layer.self_attn.q_proj.bias.normal_()
                layer.self_attn.k_proj.bias.normal_()
    return model


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_fast_equals_reference_other_families(family):
    model = _tiny(family)
    ids, corruption = _case(model, 8, (2, 4))
    ad = get_adapter(model)
    ref = trace_reference(model, ad, ids, corruption, KINDS, 3)
    fast = trace_fast(model, ad, ids, corruption, KINDS, 3)
    for kind in KINDS:
        np.testing.assert_allclose(fast[kind].ie, ref[kind].ie, atol=1e-6, rtol=0)
    assert abs(ref["hidden"].p_clean - ref["hidden"].p_corrupted) > 1e-3


@pytest.mark.parametrize("max_rows", [1, 3, 7, 10_000])
def test_fast_independent_of_batch_size(llama, max_rows):
    ids, corruption = _case(llama, 7, (1, 4))
    ad = get_adapter(llama)
    base = trace_fast(llama, ad, ids, corruption, KINDS, 3, max_rows=10_000)
    other = trace_fast(llama, ad, ids, corruption, KINDS, 3, max_rows=max_rows)
    for kind in KINDS:
        np.testing.assert_allclose(other[kind].ie, base[kind].ie, atol=1e-6, rtol=0)


def test_reference_properties(llama):
    """Hand-checkable consequences of the definitions, on the plain algorithm itself."""
    T, span = 7, (2, 4)
    ids, corruption = _case(llama, T, span)
    res = trace_reference(llama, get_adapter(llama), ids, corruption, KINDS, 3)
    h = res["hidden"]
    # before the subject nothing is corrupted, so restoring there changes nothing
    assert np.abs(h.ie[: span[0]]).max() < 1e-6
    # restoring the last token after the last block reproduces the clean output exactly
    assert h.p_restored[T - 1, -1] == pytest.approx(h.p_clean, abs=1e-6)
    # restoring any other token after the last block cannot reach the last position
    assert np.abs(h.ie[span[0] : T - 1, -1]).max() < 1e-6
    # restoring the whole subject's first layer input would be clean: first-layer hidden at last subject token
    assert not np.allclose(h.ie[span[0] :], 0)


def test_window_layers_match_rome():
    assert list(window_layers(0, 30, "mlp", 10)) == [0, 1, 2, 3, 4]
    assert list(window_layers(12, 30, "mlp", 10)) == list(range(7, 17))
    assert list(window_layers(29, 30, "attn", 10)) == list(range(24, 30))
    assert list(window_layers(5, 30, "attn", 5)) == [3, 4, 5, 6, 7]
    assert list(window_layers(5, 30, "hidden", 10)) == [5]


def test_gpt2_family_traces_with_reference():
    model = tiny_gpt2()
    ids, corruption = _case(model, 6, (1, 3), samples=2)
    res = trace_reference(model, get_adapter(model), ids, corruption, KINDS, 2)
    for kind in KINDS:
        assert res[kind].p_restored.shape == (6, 4)
        assert np.abs(res[kind].ie[:1]).max() < 1e-6
    assert res["hidden"].p_restored[5, 3] == pytest.approx(res["hidden"].p_clean, abs=1e-6)


def test_seeded_noise_is_per_prompt_and_draw():
    a = draw_noise(0, 5, 3, 2, 4)
    b = draw_noise(0, 5, 5, 2, 4)
    torch.testing.assert_close(a, b[:3])  # more draws do not change earlier ones
    assert not torch.equal(draw_noise(0, 6, 3, 2, 4), a)
    assert not torch.equal(draw_noise(1, 5, 3, 2, 4), a)
    u = draw_noise(0, 5, 2, 3, 4, kind="uniform")
    assert u.abs().max() <= 1.0


def test_explicit_noise_equals_seeded_noise(llama):
    from crosstrace.trace import NoiseConfig, Tracer, TraceSettings

    class Tok:
        def decode(self, ids):
            return str(ids)

    tracer = Tracer(llama, Tok(), TraceSettings(window=3, noise=NoiseConfig(samples=3, seed=4)), 0.1)
    ids, span = [3, 9, 27, 14, 5, 40], (1, 3)
    seeded = tracer.trace_ids(11, ids, span)
    explicit = tracer.trace_ids(11, ids, span, noise=draw_noise(4, 11, 3, 2, llama.config.hidden_size))
    other = tracer.trace_ids(11, ids, span, noise=draw_noise(5, 11, 3, 2, llama.config.hidden_size))
    for kind in KINDS:
        np.testing.assert_array_equal(seeded.kinds[kind].ie, explicit.kinds[kind].ie)
        assert not np.allclose(seeded.kinds[kind].ie, other.kinds[kind].ie)
    with pytest.raises(ValueError, match="noise must be"):
        tracer.trace_ids(11, ids, span, noise=torch.zeros(3, 1, llama.config.hidden_size))


def test_auto_max_rows_on_cpu_is_the_default(llama):
    from crosstrace.trace.fast import auto_max_rows

    assert auto_max_rows(llama, 12, torch.device("cpu")) == 512


# ------------------------------------------------------------------ answers longer than one token


@pytest.mark.parametrize(
    "T,span,window,n",
    [
        (8, (2, 5), 3, 3),  # subject in the middle, clipped windows, three answer tokens
        (7, (0, 1), 4, 2),  # single-token subject at the start
        (6, (4, 6), 10, 4),  # subject ends at the prompt's last token; window wider than the model
        (5, (1, 2), 1, 1),  # one given token (attribute_first)
    ],
)
def test_fast_equals_reference_with_given_answer(llama, T, span, window, n):
    ids, corruption = _case(llama, T, span)
    answer = greedy_tokens(llama, ids, n)  # a likely answer, so that P[o] and the IEs are far from 0
    ad = get_adapter(llama)
    ref = trace_reference(llama, ad, ids, corruption, KINDS, window, answer_ids=answer)
    fast = trace_fast(llama, ad, ids, corruption, KINDS, window, answer_ids=answer)
    for kind in KINDS:
        assert ref[kind].answer_ids == fast[kind].answer_ids == tuple(answer)
        assert ref[kind].p_restored.shape == (T, 6)  # restorations range over the prompt's tokens only
        assert fast[kind].p_clean == pytest.approx(ref[kind].p_clean, abs=1e-6)
        assert fast[kind].p_corrupted == pytest.approx(ref[kind].p_corrupted, abs=1e-6)
        np.testing.assert_allclose(fast[kind].ie, ref[kind].ie, atol=1e-6, rtol=0)
    assert np.abs(ref["hidden"].ie).max() > 5e-3  # the case exercises something: far above the tolerance


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_fast_equals_reference_with_given_answer_other_families(family):
    model = _tiny(family)  # mistral: the sliding window now also spans the appended answer tokens
    ids, corruption = _case(model, 8, (2, 4))
    ad = get_adapter(model)
    answer = greedy_tokens(model, ids, 3)
    ref = trace_reference(model, ad, ids, corruption, KINDS, 3, answer_ids=answer)
    fast = trace_fast(model, ad, ids, corruption, KINDS, 3, answer_ids=answer)
    for kind in KINDS:
        np.testing.assert_allclose(fast[kind].ie, ref[kind].ie, atol=1e-6, rtol=0)
    assert np.abs(ref["hidden"].ie).max() > 5e-3


@pytest.mark.parametrize("max_rows", [1, 7, 10_000])
def test_fast_with_given_answer_independent_of_batch_size(llama, max_rows):
    ids, corruption = _case(llama, 7, (1, 4))
    ad = get_adapter(llama)
    base = trace_fast(llama, ad, ids, corruption, KINDS, 3, max_rows=10_000, answer_ids=[3, 1, 4])
    other = trace_fast(llama, ad, ids, corruption, KINDS, 3, max_rows=max_rows, answer_ids=[3, 1, 4])
    for kind in KINDS:
        np.testing.assert_allclose(other[kind].ie, base[kind].ie, atol=1e-6, rtol=0)


def test_teacher_forced_answer_probability_by_hand(llama):
    """P_clean of an n-token answer is the product of the HF model's next-token probabilities on
    prompt + o_1..o_{n-1}; restoring nothing before the subject changes nothing; the given top-1
    token reproduces the top-1 run."""
    T, span, answer = 7, (2, 4), [11, 3, 40]
    ids, corruption = _case(llama, T, span)
    res = trace_reference(llama, get_adapter(llama), ids, corruption, KINDS, 3, answer_ids=answer)
    with torch.no_grad():
        p = llama(input_ids=torch.cat([ids, torch.tensor(answer[:-1])])[None]).logits[0].softmax(-1)
    by_hand = p[T - 1, 11] * p[T, 3] * p[T + 1, 40]
    assert res["hidden"].p_clean == pytest.approx(float(by_hand), rel=1e-5)
    assert np.abs(res["mlp"].ie[: span[0]]).max() < 1e-9
    top1 = trace_reference(llama, get_adapter(llama), ids, corruption, ("mlp",), 3)["mlp"]
    given = trace_fast(llama, get_adapter(llama), ids, corruption, ("mlp",), 3, answer_ids=[top1.answer_id])["mlp"]
    np.testing.assert_allclose(given.ie, top1.ie, atol=1e-6, rtol=0)
