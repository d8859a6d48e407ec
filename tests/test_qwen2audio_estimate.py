"""The Qwen2-Audio-7B estimate of docs/performance.md (crosstrace.bench_paper.qwen2_audio_estimate): weight memory
counted on the meta device against the hand formula, and the MAC method on hand-built prompt lengths."""

from __future__ import annotations

import numpy as np
import pytest

from crosstrace import bench_paper as bp
from crosstrace.bench_paper import ROOT
from crosstrace.trace.cost import Macs, matmul_macs
from crosstrace.vocabulary import KINDS


def test_weights_by_hand():
    w = bp.weight_gib("qwen2-audio")
    H, F, L, V = 4096, 11008, 32, 156032
    lm = 2 * V * H + L * (4 * H * H + 3 * H + 3 * H * F + 2 * H) + H  # embeddings, head; q/k/v biases; two norms
    d, f = 1280, 5120  # Whisper-large-v3's encoder: two convs, 1500 positions, 32 layers, a final norm
    enc = (128 * d * 3 + d) + (d * d * 3 + d) + 1500 * d + 32 * (4 * d * d + 3 * d + 2 * d * f + f + d + 4 * d) + 2 * d
    assert w["encoder_params"] == enc and w["params"] == lm + enc + (d * H + H)  # + the projector
    assert w["bf16_gib"] == pytest.approx(15.64, abs=0.01)


def test_mac_estimate_is_matmul_macs_over_the_lengths():
    lengths = np.array([[12, 1, 4], [40, 5, 9]])
    est = bp.mac_estimate(bp.QWEN2_AUDIO_7B, lengths, prompts=10)
    m = Macs.of(type("C", (), bp.QWEN2_AUDIO_7B))
    fast = sum(matmul_macs(k, T, b, 32, 10, 10, m)[1] for T, b, _ in lengths for k in KINDS)
    assert est["fast"]["pflop_per_prompt"] == pytest.approx(2 * fast / 2 / 1e15, rel=1e-12)
    assert est["fast"]["hours_peak"] == pytest.approx(est["fast"]["pflop_per_prompt"] * 1e15 * 10 / 790e12 / 3600)


def test_qwen2_audio_lengths_shift_the_paper_table():
    base, q = bp.prompt_lengths(), bp.qwen2_audio_lengths()
    np.testing.assert_array_equal(q["s2t"], base["s2t"] - 2)  # [BOS ▁ [Speech] … [Text]] → [bos … eos]
    np.testing.assert_array_equal(q["t2t"], base["llama2"] - 1)  # no BOS
    t2t, s2t = (bp.mac_estimate(bp.QWEN2_AUDIO_7B, q[m]) for m in ("t2t", "s2t"))
    # the numbers docs/performance.md and config/speech-llms.yaml quote
    doc = (ROOT / "docs" / "performance.md").read_text()
    for e in (t2t, s2t):
        f, r = e["fast"]["pflop_per_prompt"], e["reference"]["pflop_per_prompt"]
        assert (f"{f:.2f} ({r:.2f})" if f < 1 else f"{f:.1f} ({r:.1f})") in doc
    hours = f"{t2t['fast']['hours_realistic']:.2f} / {s2t['fast']['hours_realistic']:.1f}"
    assert hours == "0.22 / 6.8" and f"| {hours} (" in doc
    header = (ROOT / "config" / "speech-llms.yaml").read_text()
    assert f"Qwen2-Audio T→T {t2t['fast']['hours_realistic']:.1f} h, S→T {s2t['fast']['hours_realistic']:.1f}" in \
        header.replace("\n# ", " ")
