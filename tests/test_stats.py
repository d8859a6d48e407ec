"""Statistics engine: constructed data with known answers (each test can fail)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.stats import false_discovery_control

from crosstrace.report.similarity import (
    SIMILARITY_COLUMNS,
    cosine_and_l2,
    plot_similarity_by_layer,
    random_partners,
    similarity_by_layer,
    similarity_long,
)
from crosstrace.report.stats import (
    aie_table,
    bh_adjust,
    paired_comparison,
    peak_ratio,
    peak_ratio_ci,
    peak_summary,
    quote_peak_ratio,
)


def rows(model, modality, known_id, kind, category, layer, ie):
    return dict(model=model, modality=modality, known_id=known_id, kind=kind, category=category,
                layer=layer, ie=ie)


def tiny_table() -> pd.DataFrame:
    """Two prompts; prompt 2 has no middle subject. Two layers, one kind."""
    r = []
    vals = {  # (known_id, category) -> ie at layers 0, 1
        (1, "first_subject"): (0.1, 0.3),
        (1, "middle_subject"): (0.5, 0.7),
        (1, "last"): (1.0, 2.0),
        (2, "first_subject"): (0.3, 0.5),
        (2, "last"): (3.0, 6.0),
    }
    for (k, c), ies in vals.items():
        for layer, ie in enumerate(ies):
            r.append(rows("m", "t2t", k, "mlp", c, layer, ie))
    return pd.DataFrame(r)


def normal_table(rng, n_models=1, n_prompts=30, cells=(("mlp", "last", 0),), loc=0.0, modality="t2t"):
    r = []
    for m in range(n_models):
        x = rng.normal(loc, 1.0, size=(n_prompts, len(cells)))
        for k in range(n_prompts):
            for j, (kind, cat, layer) in enumerate(cells):
                r.append(rows(f"m{m}", modality, k, kind, cat, layer, x[k, j]))
    return pd.DataFrame(r)


# ---------------------------------------------------------------- AIE table


def test_exact_aie_and_n_per_category():
    t = aie_table(tiny_table(), n_boot=50, seed=0, category_mean="per_prompt")
    assert list(t.columns) == ["model", "modality", "kind", "category", "layer", "aie", "n",
                               "ci_low", "ci_high", "category_mean"]
    assert set(t["category_mean"]) == {"per_prompt"}
    got = {(r.category, r.layer): (r.aie, r.n) for r in t.itertuples()}
    assert got[("first_subject", 0)] == pytest.approx((0.2, 2))
    assert got[("first_subject", 1)] == pytest.approx((0.4, 2))
    assert got[("middle_subject", 0)] == pytest.approx((0.5, 1))
    assert got[("middle_subject", 1)] == pytest.approx((0.7, 1))
    assert got[("last", 0)] == pytest.approx((2.0, 2))
    assert got[("last", 1)] == pytest.approx((4.0, 2))
    # paper order of categories, then layer
    assert list(t["category"]) == ["first_subject"] * 2 + ["middle_subject"] * 2 + ["last"] * 2
    # a one-prompt cell has a degenerate CI; every CI brackets the range of the prompt values
    mid = t[t.category == "middle_subject"]
    assert (mid.ci_low == mid.aie).all() and (mid.ci_high == mid.aie).all()
    last1 = t[(t.category == "last") & (t.layer == 1)].iloc[0]
    assert 2.0 <= last1.ci_low <= last1.ci_high <= 6.0


def test_nan_ie_counts_as_absent():
    d = tiny_table()
    d.loc[(d.known_id == 2) & (d.category == "last") & (d.layer == 0), "ie"] = np.nan
    t = aie_table(d, n_boot=20, category_mean="per_prompt")
    r = t[(t.category == "last") & (t.layer == 0)].iloc[0]
    assert (r.aie, r.n) == (1.0, 1)


def test_duplicates_rejected():
    d = tiny_table()
    with pytest.raises(ValueError, match="duplicate"):
        aie_table(pd.concat([d, d.iloc[:1]]), n_boot=10, category_mean="per_prompt")


def test_bootstrap_ci_coverage():
    """400 independent groups of n=30 N(2, 1) prompts: the 95% CI covers 2 about 95% of the time."""
    rng = np.random.default_rng(123)
    d = normal_table(rng, n_models=400, n_prompts=30, loc=2.0)
    t = aie_table(d, n_boot=400, seed=1, category_mean="per_prompt")
    assert len(t) == 400
    cover = ((t.ci_low <= 2.0) & (t.ci_high >= 2.0)).mean()
    assert 0.90 <= cover <= 0.99, cover
    # and the width is about that of a normal-theory interval (2·1.96/√30 ≈ 0.716)
    assert 0.6 < (t.ci_high - t.ci_low).mean() < 0.8


def test_cells_resampled_jointly():
    """Two cells with identical per-prompt values get identical CIs only if resampled together."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=25)
    d = pd.DataFrame([rows("m", "s2t", k, kind, "last", 3, x[k])
                      for k in range(25) for kind in ("mlp", "attn")])
    t = aie_table(d, n_boot=200, seed=5, category_mean="per_prompt")
    a, b = t[t.kind == "mlp"].iloc[0], t[t.kind == "attn"].iloc[0]
    assert a.ci_low == b.ci_low and a.ci_high == b.ci_high
    assert list(t.kind) == ["mlp", "attn"]


def test_vectorised_bootstrap_equals_naive_nanmean_over_resampled_prompts():
    """The count-matrix bootstrap is the plain one: draw prompt indices, nanmean the rows."""
    from crosstrace.report.stats import bootstrap_cell_means

    rng = np.random.default_rng(8)
    X = rng.normal(size=(9, 5))
    X[rng.uniform(size=X.shape) < 0.3] = np.nan
    X[:, 4] = np.nan
    X[2, 4] = 1.5  # a cell only one prompt has: NaN in resamples that miss prompt 2
    boot = bootstrap_cell_means(X, 300, np.random.default_rng(1))
    idx = np.random.default_rng(1).integers(0, 9, size=(300, 9))
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        naive = np.stack([np.nanmean(X[i], axis=0) for i in idx])
    np.testing.assert_allclose(boot, naive, rtol=1e-12, equal_nan=True)
    assert np.isnan(boot[:, 4]).any() and (boot[:, 4][~np.isnan(boot[:, 4])] == 1.5).all()


def test_determinism_and_seed_dependence():
    rng = np.random.default_rng(7)
    cells = tuple(itertools.product(("mlp", "attn"), ("last",), range(3)))
    d = pd.concat([normal_table(rng, n_models=2, cells=cells),
                   normal_table(rng, n_models=2, cells=cells, modality="s2t")])
    t1 = aie_table(d, n_boot=200, seed=3, category_mean="per_prompt")
    # row order irrelevant
    t2 = aie_table(d.sample(frac=1.0, random_state=1), n_boot=200, seed=3, category_mean="per_prompt")
    pd.testing.assert_frame_equal(t1, t2)
    t3 = aie_table(d, n_boot=200, seed=4, category_mean="per_prompt")
    assert np.array_equal(t1.aie, t3.aie)
    assert not np.array_equal(t1.ci_low, t3.ci_low)
    # a group's CIs do not depend on which other groups are in the table
    alone = aie_table(d[(d.model == "m0") & (d.modality == "t2t")], n_boot=200, seed=3, category_mean="per_prompt")
    pd.testing.assert_frame_equal(alone, t1.iloc[: len(alone)].reset_index(drop=True))


# ---------------------------------------------------------------- paired comparison


def paired_frame(diffs: np.ndarray, base: np.ndarray | None = None) -> pd.DataFrame:
    """a = base + diffs, b = base, one row per (prompt, cell); diffs is prompts × cells."""
    n_p, n_c = diffs.shape
    if base is None:
        base = np.zeros_like(diffs)
    r = []
    for k in range(n_p):
        for c in range(n_c):
            r.append(rows("spiritlm", "t2t", k, "mlp", "last", c, base[k, c] + diffs[k, c]))
            r.append(rows("spiritlm", "s2t", k, "mlp", "last", c, base[k, c]))
    return pd.DataFrame(r)


A, B = ("spiritlm", "t2t"), ("spiritlm", "s2t")


def test_permutation_rejects_planted_difference():
    rng = np.random.default_rng(1)
    d = paired_frame(rng.normal(1.0, 1.0, size=(30, 1)), base=rng.normal(size=(30, 1)))
    res = paired_comparison(d, A, B, n_perm=2000, seed=0, category_mean="per_prompt")
    r = res.iloc[0]
    assert r.n == 30 and r.p < 0.01 and r.significant
    assert r["diff"] == pytest.approx(r.mean_a - r.mean_b)
    assert r.p >= 1 / 2001  # the +1 correction: never zero


def test_permutation_null_rate():
    rng = np.random.default_rng(2)
    res = paired_comparison(paired_frame(rng.normal(size=(30, 500))), A, B, n_perm=2000, seed=0,
                            category_mean="per_prompt")
    assert len(res) == 500
    frac = (res.p < 0.05).mean()
    assert 0.02 <= frac <= 0.09, frac
    assert res.significant.mean() < 0.02  # BH keeps false discoveries rare under the null


def test_permutation_p_matches_exact_enumeration():
    """n=8 prompts: the Monte-Carlo p-value approaches the exact two-sided sign-flip p-value."""
    x = np.array([0.9, 0.4, -0.2, 1.3, 0.7, 0.1, 0.5, -0.6])
    signs = np.array(list(itertools.product((-1, 1), repeat=8)))
    exact = np.mean(np.abs(signs @ x) >= abs(x.sum()) - 1e-12)
    res = paired_comparison(paired_frame(x[:, None]), A, B, n_perm=40000, seed=0, category_mean="per_prompt")
    assert res.p.iloc[0] == pytest.approx(exact, abs=0.006)


def test_zero_differences_give_p_one_and_inner_join():
    d = paired_frame(np.zeros((10, 2)))
    d = d[~((d.modality == "s2t") & (d.known_id == 9))]  # b lacks prompt 9
    extra = pd.DataFrame([rows("spiritlm", "s2t", 99, "mlp", "last", 0, 5.0)])  # a lacks 99
    res = paired_comparison(pd.concat([d, extra]), A, B, n_perm=500, seed=0, category_mean="per_prompt")
    assert (res.n == 9).all() and (res.p == 1.0).all() and (res["diff"] == 0).all()


def test_bh_matches_scipy():
    rng = np.random.default_rng(3)
    for size in (1, 7, 200):
        p = rng.uniform(size=size) ** 3
        np.testing.assert_allclose(bh_adjust(p), false_discovery_control(p, method="bh"))
    p = np.array([0.01, 0.01, 0.04, 0.04, 0.5, 1.0, 0.001])  # ties
    np.testing.assert_allclose(bh_adjust(p), false_discovery_control(p, method="bh"))
    q = bh_adjust([0.02, np.nan, 0.01])
    assert np.isnan(q[1]) and np.allclose(q[[0, 2]], [0.02, 0.02])


# ---------------------------------------------------------------- peaks


def test_peak_summary_and_ratio():
    aie = pd.DataFrame([
        dict(model="spiritlm", modality="t2t", kind="mlp", category="last_subject", layer=5, aie=0.63),
        dict(model="spiritlm", modality="t2t", kind="mlp", category="last", layer=20, aie=0.20),
        dict(model="spiritlm", modality="s2t", kind="mlp", category="last_subject", layer=4, aie=0.05),
        dict(model="spiritlm", modality="s2t", kind="mlp", category="further", layer=9, aie=0.10),
        dict(model="spiritlm", modality="s2t", kind="attn", category="last", layer=9, aie=np.nan),
        dict(model="spiritlm", modality="s2t", kind="attn", category="last", layer=10, aie=0.02),
    ])
    s = peak_summary(aie)
    got = {(r.modality, r.kind): (r.peak_aie, r.category, r.layer) for r in s.itertuples()}
    assert got == {("t2t", "mlp"): (0.63, "last_subject", 5), ("s2t", "mlp"): (0.10, "further", 9),
                   ("s2t", "attn"): (0.02, "last", 10)}
    assert peak_ratio(s, A, B, "mlp") == pytest.approx(6.3)
    assert quote_peak_ratio(s, A, B, "mlp") == "T→T peak AIE (MLP) is 6.3× S→T"
    with pytest.raises(KeyError):
        peak_ratio(s, A, B, "hidden")


def test_quote_peak_ratio_names_every_kind_by_its_title():
    # the kind's display title from the vocabulary, the same way for all three kinds; model names when
    # a and b are different models
    s = pd.DataFrame([dict(model=m, modality="t2t", kind=k, peak_aie=v)
                      for m, v in (("a", 0.3), ("b", 0.1)) for k in ("hidden", "mlp", "attn")])
    a, b = ("a", "t2t"), ("b", "t2t")
    assert [quote_peak_ratio(s, a, b, k) for k in ("hidden", "mlp", "attn")] == [
        "a T→T peak AIE (hidden states) is 3.0× b T→T",
        "a T→T peak AIE (MLP) is 3.0× b T→T",
        "a T→T peak AIE (attention) is 3.0× b T→T",
    ]


def test_peak_ratio_ci_brackets_truth():
    rng = np.random.default_rng(4)
    r = []
    for k in range(60):
        for layer in range(3):
            r.append(rows("x", "t2t", k, "mlp", "last", layer, rng.normal(3.0 if layer == 1 else 1.0, 0.3)))
            r.append(rows("x", "s2t", k, "mlp", "last", layer, rng.normal(0.5, 0.3)))
    ratio, lo, hi = peak_ratio_ci(pd.DataFrame(r), ("x", "t2t"), ("x", "s2t"), n_boot=300, category_mean="per_prompt")
    assert lo < ratio < hi and lo < 6.0 < hi and hi - lo < 2.5


# ---------------------------------------------------------------- similarity


def test_cosine_and_l2_hand_made():
    x = np.array([[1.0, 0.0], [1.0, 2.0], [3.0, 4.0], [1.0, 1.0]])
    y = np.array([[0.0, 5.0], [2.0, 4.0], [0.0, 0.0], [-1.0, -1.0]])
    cos, l2 = cosine_and_l2(x, y)
    assert cos[0] == pytest.approx(0.0) and cos[1] == pytest.approx(1.0)
    assert np.isnan(cos[2]) and l2[2] == pytest.approx(5.0)
    assert cos[3] == pytest.approx(-1.0) and l2[3] == pytest.approx(np.sqrt(8))
    assert l2[0] == pytest.approx(np.sqrt(26)) and l2[1] == pytest.approx(np.sqrt(5))


def test_random_partners_never_self_and_cover_others():
    p = random_partners(3, 2000, np.random.default_rng(0))
    assert (p != np.arange(3)[None, :]).all()
    for i in range(3):  # each of the two other prompts is chosen about half the time
        counts = np.bincount(p[:, i], minlength=3)
        assert counts[i] == 0 and min(np.delete(counts, i)) > 900
    assert (random_partners(2, 10, 1) == np.array([1, 0])[None, :]).all()


def test_similarity_by_layer_known_answers():
    """Prompts are distinct one-hot vectors and speech == text: matched cos 1, L2 0; any pair with
    a different prompt is orthogonal (cos 0, L2 √2) — a self-pair would raise the baseline."""
    n, L = 12, 3
    eye = np.eye(n)
    text = np.stack([eye * (layer + 1) for layer in range(L)], axis=1)  # (n, L, n)
    sim = similarity_by_layer(text, text.copy(), np.random.default_rng(0), n_random=5, n_boot=100)
    assert list(sim.layer) == [0, 1, 2] and (sim.n == n).all()
    np.testing.assert_allclose(sim.cos, 1.0)
    np.testing.assert_allclose(sim.l2, 0.0)
    np.testing.assert_allclose(sim.random_cos, 0.0, atol=1e-12)
    np.testing.assert_allclose(sim.random_l2, np.sqrt(2) * np.arange(1, L + 1))
    np.testing.assert_allclose(sim.cos_minus_random, 1.0)
    np.testing.assert_allclose(sim.cos_ci_low, 1.0)
    assert "different prompt" in sim.attrs["baseline"]


def test_similarity_ci_and_determinism():
    rng = np.random.default_rng(5)
    text = rng.normal(size=(40, 4, 16)).astype(np.float32)
    speech = text + rng.normal(scale=np.array([0.5, 1.0, 2.0, 4.0])[None, :, None], size=text.shape)
    s1 = similarity_by_layer(text, speech, 11, n_random=4, n_boot=300)
    s2 = similarity_by_layer(text, speech, np.random.default_rng(11), n_random=4, n_boot=300)
    pd.testing.assert_frame_equal(s1, s2)
    assert (np.diff(s1.cos) < 0).all() and (np.diff(s1.l2) > 0).all()  # more noise: less similar
    assert ((s1.cos_ci_low < s1.cos) & (s1.cos < s1.cos_ci_high)).all()
    assert (s1.cos_minus_random_ci_low > 0).all()  # matched beats random pairs at every layer
    assert (s1.random_cos.abs() < 0.15).all()


def test_similarity_figure(tmp_path):
    rng = np.random.default_rng(6)
    text = rng.normal(size=(10, 5, 8))
    sim = similarity_by_layer(text, text + rng.normal(size=text.shape), rng, n_random=2, n_boot=50)
    paths = plot_similarity_by_layer({"SpiritLM": sim, "backbone": sim}, tmp_path / "f" / "sim",
                                     title="t")
    assert [p.name for p in paths] == ["sim.png", "sim.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    svg = plot_similarity_by_layer(sim, tmp_path / "g" / "sim", formats=["svg"])
    assert [p.name for p in svg] == ["sim.svg"] and b"<svg" in svg[0].read_bytes()


def test_similarity_long_one_row_per_position_metric_layer():
    rng = np.random.default_rng(8)
    text = rng.normal(size=(6, 3, 4))
    wides = {pos: similarity_by_layer(text, text + rng.normal(size=text.shape), rng, n_random=2, n_boot=20)
             for pos in ("subject", "last")}
    long = similarity_long(wides)
    assert list(long.columns) == SIMILARITY_COLUMNS and len(long) == 2 * 2 * 3
    assert list(long.groupby(["position", "metric"], sort=False).size().index) == [
        ("subject", "cos"), ("subject", "l2"), ("last", "cos"), ("last", "l2")]
    row = long[(long.position == "last") & (long.metric == "l2") & (long.layer == 2)].iloc[0]
    w = wides["last"].iloc[2]
    assert (row["n"], row["mean"], row["ci_low"], row["ci_high"]) == (6, w.l2, w.l2_ci_low, w.l2_ci_high)
    assert (row["baseline_mean"], row["baseline_ci_high"]) == (w.random_l2, w.random_l2_ci_high)
    assert (row["diff_mean"], row["diff_ci_low"]) == (w.l2_minus_random, w.l2_minus_random_ci_low)
    assert list(similarity_long({}).columns) == SIMILARITY_COLUMNS
