"""The benchmark's cost model is the work the engines really do (counted by torch's FLOP counter)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_llama
from torch.utils.flop_counter import FlopCounterMode

from crosstrace.bench import compare, main, reference_seconds
from crosstrace.models.adapter import get_adapter
from crosstrace.trace.cost import Macs, matmul_macs
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


def test_paper_scale_tiny_runs_the_device_code_on_cpu(tmp_path, capsys, one_thread):
    """`--paper-scale --tiny`: the code path of the GPU benchmark with tiny dimensions. Structure, agreement
    and the docs section are checked, not timings."""
    from crosstrace import bench_paper

    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nkept text\n")
    main(["--paper-scale", "--tiny", "--samples", "2", "--t2t-quantiles", "0.1", "--s2t-quantiles", "0.1",
          "--passes", "2", "--doc", str(doc)])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["config"]["num_hidden_layers"] == 2 and res["skipped"] == []
    rows = {(r["modality"], r["kind"]): r for r in res["rows"]}
    assert set(rows) == {(m, k) for m in ("t2t", "s2t") for k in ("hidden", "mlp", "attn")}
    lengths = res["lengths"]
    assert lengths["t2t"]["n"] == lengths["llama2"]["n"] == 1209 and lengths["s2t"]["n"] >= 300
    assert lengths["t2t"]["median"] == lengths["llama2"]["median"] + 2
    for (modality, _), r in rows.items():
        assert r["fast_s"] > 0 and r["reference_s"] > 0 and r["max_rows"] == 512
        assert r["reference_macs"] > r["fast_macs"] > 0
        if modality == "t2t":  # the shortest timed T→T prompt: reference in full, same IE as fast
            assert r["reference"] == "measured in full" and r["max_abs_diff_ie_ref_vs_fast"] < 0.05
        else:
            assert r["reference"] == "extrapolated from 2 passes" and r["tokens"] > 30
    assert {p["kind"] for p in res["precision"]} == {"hidden", "mlp", "attn"}
    assert all(p["max_abs_diff_ie_bf16_vs_fp32"] < 0.05 for p in res["precision"])
    proj = res["projection"]
    for run in ("spiritlm_t2t", "spiritlm_s2t", "llama2_t2t"):
        assert proj[run]["reference"]["hours"] > proj[run]["fast"]["hours"] > 0
    assert proj["spiritlm_s2t"]["fast"]["hours"] > proj["spiritlm_t2t"]["fast"]["hours"]
    text = doc.read_text()
    assert text.startswith("# Performance\n\nkept text") and text.count(bench_paper.BEGIN) == 1
    assert "--doc" not in text and "| s2t |" in text and "spiritlm_s2t" in text
    bench_paper.write_doc(doc, bench_paper.markdown(res, "again"))  # rewrites in place
    assert doc.read_text().count(bench_paper.BEGIN) == 1 and "again" in doc.read_text()


def test_paper_scale_refuses_cpu_without_tiny():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        main(["--paper-scale"])
