"""The benchmark's cost model is the work the engines really do (counted by torch's FLOP counter)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama
from torch.utils.flop_counter import FlopCounterMode

from crosstrace.bench import Macs, compare, matmul_macs, reference_seconds
from crosstrace.models.adapter import get_adapter
from crosstrace.trace.fast import trace_fast
from crosstrace.trace.noise import draw_noise
from crosstrace.trace.reference import trace_reference
from crosstrace.trace.state import Corruption

KINDS = ("hidden", "mlp", "attn")


def _matmul_macs_counted(fn) -> int:
    """Weight-matrix MACs of ``fn``: torch's counted mm/addmm FLOPs / 2 (attention scores excluded)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    ops = counter.get_flop_counts()["Global"]
    return sum(v for op, v in ops.items() if str(op).split(".")[1] in ("mm", "addmm")) // 2


@pytest.fixture(scope="module")
def case():
    model = tiny_llama(layers=5)
    T, span, S = 7, (2, 4), 3
    ids = torch.randint(0, 64, (T,), generator=torch.Generator().manual_seed(0))
    noise = 0.5 * draw_noise(0, 1, S, span[1] - span[0], model.config.hidden_size)
    return model, get_adapter(model), ids, Corruption(span, noise)


@pytest.mark.parametrize("kind", KINDS)
def test_matmul_macs_match_counted_work(case, kind):
    model, ad, ids, corruption = case
    m = Macs.of(model.config)
    ref, fast = matmul_macs(kind, 7, 2, 5, 3, 3, m)
    assert _matmul_macs_counted(lambda: trace_reference(model, ad, ids, corruption, (kind,), 3)) == ref
    assert _matmul_macs_counted(lambda: trace_fast(model, ad, ids, corruption, (kind,), 3, 10_000)) == fast
    assert ref > 2 * fast


@pytest.mark.parametrize("kind", KINDS)
def test_matmul_macs_with_a_three_token_answer(case, kind):
    model, ad, ids, corruption = case
    ref, fast = matmul_macs(kind, 7, 2, 5, 3, 3, Macs.of(model.config), n_answer=3)
    answer = [5, 6, 7]
    assert _matmul_macs_counted(lambda: trace_reference(model, ad, ids, corruption, (kind,), 3, answer)) == ref
    assert _matmul_macs_counted(lambda: trace_fast(model, ad, ids, corruption, (kind,), 3, 10_000, answer)) == fast


def test_macs_by_hand():
    # hidden 8, 2 heads of 4, 1 kv head, mlp 16, vocab 10
    cfg = type("C", (), dict(hidden_size=8, num_attention_heads=2, num_key_value_heads=1, intermediate_size=16,
                             vocab_size=10, head_dim=4))
    m = Macs.of(cfg)
    assert (m.q, m.kv, m.o, m.mlp, m.head, m.block) == (64, 64, 64, 384, 80, 576)
    # T=1, L=1, S=1, hidden: reference = (1 + 2·2)·1·(576 + 80); fast = 2·(576 + 80) + one head row
    assert matmul_macs("hidden", 1, 0, 1, 1, 1, m) == (5 * 656, 2 * 656 + 80)


def test_compare_and_extrapolated_reference(case):
    model, ad, ids, corruption = case
    row = compare(model, ad, ids, corruption, ("mlp",), 3, 10_000)["mlp"]
    assert row["max_abs_diff_ie"] < 1e-6
    assert row["reference_s"] > 0 and row["fast_s"] > 0 and row["reference_macs"] > row["fast_macs"]
    est = reference_seconds(model, ad, ids, corruption, "mlp", 3, passes=4)
    assert 0 < est < 20 * row["reference_s"]
