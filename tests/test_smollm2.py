"""The offline default model, for real: noise scale, an answer it knows, fast == reference."""

import numpy as np
import pytest
import torch

from crosstrace.data import BUNDLED_KNOWN, load_known
from crosstrace.models.adapter import get_adapter
from crosstrace.trace import NoiseConfig, Tracer, TraceSettings, encode_prompt
from crosstrace.trace.api import subject_embedding_std
from crosstrace.trace.fast import trace_fast
from crosstrace.trace.reference import trace_reference


def test_s3_noise_scale_over_all_known_subjects(smollm):
    records, quarantined = load_known(BUNDLED_KNOWN)
    assert len(records) == 1209 and not quarantined
    std = subject_embedding_std(smollm.model, smollm.tokenizer, [r.subject for r in records])
    assert std == pytest.approx(0.1167, abs=5e-4)  # docs/method.md: ν ≈ 0.350
    assert NoiseConfig().scale(std) == pytest.approx(0.350, abs=2e-3)


def test_known_fact_and_engines_agree(smollm):
    tracer = Tracer(smollm.model, smollm.tokenizer, TraceSettings(window=4, noise=NoiseConfig(samples=2)), 0.1167)
    prompt, subject = "Catalonia belongs to the continent of", "Catalonia"
    enc = encode_prompt(smollm.tokenizer, prompt, subject)
    ids = torch.tensor(enc.input_ids)
    corruption = tracer.corruption(6, enc.subject_span)
    ad = get_adapter(smollm.model)
    fast = trace_fast(smollm.model, ad, ids, corruption, ("mlp",), 4)["mlp"]
    ref = trace_reference(smollm.model, ad, ids, corruption, ("mlp",), 4)["mlp"]
    assert smollm.tokenizer.decode([fast.answer_id]) == " Europe"
    assert fast.p_clean == pytest.approx(0.785, abs=0.01)
    assert fast.p_corrupted < fast.p_clean
    np.testing.assert_allclose(fast.ie, ref.ie, atol=1e-5, rtol=0)
    assert fast.ie.max() > 0.05  # restoring the subject recovers a visible share of the answer
