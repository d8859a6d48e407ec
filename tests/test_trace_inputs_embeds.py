"""The engines run from input embeddings as they run from token ids (what a continuous-input speech family needs):
a prompt's ids and its embeddings give the same traces to the last bit, for every engine and answer mode, and
embeddings that are no token's are traced as given."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_llama

from crosstrace.models.adapter import get_adapter
from crosstrace.trace import NoiseConfig, Tracer, TraceSettings
from crosstrace.trace.atp import trace_atp
from crosstrace.trace.fast import trace_fast
from crosstrace.trace.noise import draw_noise
from crosstrace.trace.reference import rome_inputs, trace_reference
from crosstrace.trace.state import Corruption, clean_embeds

KINDS = ("hidden", "mlp", "attn")
ENGINES = {"reference": lambda m, a, p, c, ans: trace_reference(m, a, p, c, KINDS, 3, ans),
           "fast": lambda m, a, p, c, ans: trace_fast(m, a, p, c, KINDS, 3, answer_ids=ans),
           "atp": lambda m, a, p, c, ans: trace_atp(m, a, p, c, KINDS, 3, answer_ids=ans)}


@pytest.fixture(scope="module")
def llama():
    return tiny_llama()


def _case(model, T=8, span=(2, 5)):
    torch.manual_seed(3)
    ids = torch.randint(0, model.config.vocab_size, (T,))
    return ids, Corruption(span, 0.5 * draw_noise(1, 7, 3, span[1] - span[0], model.config.hidden_size))


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("answer", [None, [5, 9, 2]])
def test_ids_and_their_embeddings_trace_identically(llama, engine, answer):
    ids, corruption = _case(llama)
    ad = get_adapter(llama)
    with torch.no_grad():
        embeds = ad.embed(ids)
    a = ENGINES[engine](llama, ad, ids, corruption, answer)
    b = ENGINES[engine](llama, ad, embeds, corruption, answer)
    for kind in KINDS:
        assert (a[kind].answer_ids, a[kind].p_clean, a[kind].p_corrupted) == (b[kind].answer_ids, b[kind].p_clean,
                                                                                b[kind].p_corrupted)
        np.testing.assert_array_equal(a[kind].p_restored, b[kind].p_restored)


def test_clean_embeds_appends_the_teacher_forced_answer(llama):
    ids, _ = _case(llama)
    ad = get_adapter(llama)
    with torch.no_grad():
        x = clean_embeds(ad, ad.embed(ids) + 1.0, [5, 9, 2])
        assert x.shape == (1, 10, 32)
        assert torch.equal(x[0, :8], ad.embed(ids) + 1.0)  # the given embeddings, untouched
        assert torch.equal(x[0, 8:], ad.embed(torch.tensor([5, 9])))  # o_1, o_2 follow; o_3 is only read
        assert torch.equal(clean_embeds(ad, ids), ad.embed(ids)[None])


def test_embeddings_of_no_token_are_traced_as_given(llama):
    """Embeddings off the vocabulary (as Qwen2-Audio's audio frames are): the clean run is the model's forward pass
    on them, the corrupted run adds ν·ε at the span; reference and fast agree."""
    ids, corruption = _case(llama)
    ad = get_adapter(llama)
    torch.manual_seed(0)
    x = 0.3 * torch.randn(8, 32)
    ref = trace_reference(llama, ad, x, corruption, KINDS, 3)
    fast = trace_fast(llama, ad, x, corruption, KINDS, 3)
    with torch.no_grad():
        p = llama(inputs_embeds=x[None]).logits[0, -1].softmax(-1)
        rows = rome_inputs(ad, x, corruption)
        p_corr = llama(inputs_embeds=rows[1:]).logits[:, -1].softmax(-1)[:, int(p.argmax())].double().mean()
    assert ref["hidden"].answer_id == int(p.argmax()) and ref["hidden"].p_clean == pytest.approx(float(p.max()), abs=1e-7)
    assert ref["hidden"].p_corrupted == pytest.approx(float(p_corr), abs=1e-7)
    assert abs(ref["hidden"].p_clean - ref["hidden"].p_corrupted) > 1e-3
    for kind in KINDS:
        np.testing.assert_allclose(fast[kind].p_restored, ref[kind].p_restored, atol=1e-6, rtol=0)


def _word_tokenizer(n: int = 64):
    """A real fast tokenizer whose 64 words t0..t63 are the tiny model's ids (token labels only)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({f"t{i}": i for i in range(n)}, unk_token="t0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk)


def test_tracer_takes_inputs_embeds(llama):
    ids, corruption = _case(llama)
    ad = get_adapter(llama)
    settings = TraceSettings(kinds=KINDS, window=3, noise=NoiseConfig(samples=3, multiple=None, absolute=0.5), engine="fast")
    tracer = Tracer(llama, _word_tokenizer(), settings)
    eps = corruption.noise / 0.5
    x = 0.3 * torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    tr = tracer.trace_ids(7, ids.tolist(), (2, 5), noise=eps, inputs_embeds=x)
    ref = trace_reference(llama, ad, x, corruption, KINDS, 3)
    assert tr.input_ids == ids.tolist() and tr.tokens == [f"t{i}" for i in ids.tolist()]  # ids name the positions
    for kind in KINDS:
        np.testing.assert_allclose(tr.kinds[kind].p_restored, ref[kind].p_restored, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="inputs_embeds has 7 positions, input_ids 8"):
        tracer.trace_ids(7, ids.tolist(), (2, 5), inputs_embeds=x[:7])
