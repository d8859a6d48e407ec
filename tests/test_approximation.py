"""Agreement metrics and the screening rule (crosstrace.approximation), on hand-checked values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crosstrace.approximation import (
    ScreenRule,
    compare,
    completeness_gap,
    grid_agreement,
    prompt_scores,
    screen,
    top_k_overlap,
)


def test_top_k_overlap_and_grid_agreement():
    exact = np.array([[0.0, 0.0], [0.9, 0.1], [0.5, 0.3]])
    assert top_k_overlap(exact, exact, 2) == 1.0
    assert top_k_overlap(exact, -exact, 2) == 0.0
    approx = np.array([[0.0, 0.0], [0.8, 0.2], [0.1, 0.4]])  # top-2 of exact: 0.9, 0.5; of approx: 0.8, 0.4
    assert top_k_overlap(exact, approx, 2) == 0.5
    # from the subject start (token 1): ranks 4,1,3,2 vs 4,2,1,3 → ρ = 1 − 6·(0+1+4+1)/(4·15) = 0.4
    agree = grid_agreement(exact, approx, start=1, k=2)
    assert agree["spearman"] == pytest.approx(0.4)
    assert agree["top_overlap"] == 0.5


def test_completeness_gap():
    # total effect 0.5; the layer sums are 0.5 and 0.25: gaps 0 and 0.25, mean 0.125, relative 0.25
    ie = np.array([[0.25, 0.25], [0.25, 0.0]])
    assert completeness_gap(ie, 0.6, 0.1) == pytest.approx(0.25)
    assert completeness_gap(ie, 0.3, 0.3) == 0.0  # nothing to explain


def _ie_table(values: dict[int, np.ndarray], p_clean=0.6, p_corr=0.1) -> pd.DataFrame:
    rows = []
    for kid, mat in values.items():
        for kind in ("hidden", "mlp"):
            for t in range(mat.shape[0]):
                for layer in range(mat.shape[1]):
                    rows.append({"known_id": kid, "kind": kind, "token_index": t, "layer": layer,
                                 "ie": mat[t, layer] * (1 if kind == "hidden" else 0.5), "n_tokens": mat.shape[0],
                                 "p_clean": p_clean, "p_corrupted": p_corr, "subject_start": 0, "subject_end": 1,
                                 "answer_id": 7})
    return pd.DataFrame(rows)


def test_screen_selects_top_n_and_uncertain_prompts_with_reasons():
    ie = pd.concat([
        _ie_table({3: np.array([[0.25, 0.25], [0.25, 0.25]])}, p_clean=0.6, p_corr=0.1),  # gap 0, peak 0.25
        _ie_table({1: np.array([[0.4, 0.0], [0.0, 0.0]])}, p_clean=0.4, p_corr=0.1),  # gap (0.1+0.3)/2/0.3
        _ie_table({2: np.array([[0.1, 0.2], [0.2, 0.3]])}, p_clean=0.9, p_corr=0.1),  # gap (0.5+0.3)/2/0.8
    ])
    scores = prompt_scores(ie).set_index("known_id")
    assert scores["gap"].round(6).to_dict() == {3: 0.0, 1: round(2 / 3, 6), 2: 0.5}
    assert scores["total_effect"].round(6).to_dict() == {3: 0.5, 1: 0.3, 2: 0.8}
    assert scores["atp_peak"].to_dict() == {3: 0.25, 1: 0.4, 2: 0.3}
    table = screen(scores.reset_index(), ScreenRule(top_n=1, max_gap=0.6))
    assert list(table["known_id"]) == [2, 3, 1] and list(table["rank"]) == [1, 2, 3]
    assert list(table["selected"]) == [True, False, True]
    assert table["reason"].iloc[0] == "total_effect rank 1 ≤ top_n 1"
    assert table["reason"].iloc[2] == "AtP completeness gap 0.67 > max_gap 0.6"
    assert table["reason"].iloc[1].startswith("AtP only")
    table = screen(scores.reset_index(), ScreenRule(top_n=2, max_gap=None, rank_by="atp_peak"))
    assert list(table["known_id"]) == [1, 2, 3] and list(table["selected"]) == [True, True, False]
    with pytest.raises(ValueError, match="top_n must be >= 0"):
        ScreenRule(top_n=-1)
    with pytest.raises(ValueError, match="rank_by must be one of"):
        ScreenRule(rank_by="peak")


def test_compare_reports_per_prompt_and_per_category():
    exact = _ie_table({0: np.array([[0.25, 0.25], [0.25, 0.25]]), 1: np.array([[0.4, 0.0], [0.1, 0.0]])})
    approx = exact.assign(ie=exact["ie"] * 2)  # same ranks, twice the size
    per_prompt, cats = compare(exact, approx, k=2)
    assert len(per_prompt) == 4 and set(per_prompt["kind"]) == {"hidden", "mlp"}
    assert per_prompt.loc[per_prompt["known_id"] == 1, "spearman"].eq(1.0).all()
    hidden = cats[cats["kind"] == "hidden"].set_index("category")
    # first subject (token 0) AIE over the two prompts: exact (0.25+0.4)/2 at layer 0 → doubled
    assert hidden.loc["first_subject", "max_abs_diff"] == pytest.approx(0.325)
    assert hidden.loc["first_subject", "exact_peak_layer"] == hidden.loc["first_subject", "approx_peak_layer"] == 0


def test_figures_of_an_atp_run_say_approximate():
    from crosstrace.report import figures as F
    from crosstrace.report.stats import aie_table

    rows = [dict(model="m", modality="t2t", known_id=k, kind=kind, category=c, layer=layer, ie=0.1 + 0.01 * k)
            for k in range(3) for kind in ("hidden", "mlp") for c in F.CATEGORIES for layer in range(2)]
    aie = aie_table(pd.DataFrame(rows), n_boot=20, category_mean="per_prompt")
    meta = {"model": "m", "modality": "t2t", "samples": 2, "noise_scale": 0.3, "window": 2}
    titles = []
    for engine in ("fast", "atp"):
        fig = F.heatmap_figure(aie, "mlp", {**meta, "engine": engine})
        titles.append(fig.axes[0].get_title())
    assert "APPROXIMATE (AtP)" not in titles[0] and "APPROXIMATE (AtP)" in titles[1]
    # panels: kinds title the columns, each run labels its row (and says when it is approximate)
    fig = F.panel_figure(aie, [("m", "t2t"), ("e", "t2t")], ("hidden", "mlp"),
                         meta={("m", "t2t"): {**meta, "engine": "atp"}, ("e", "t2t"): {**meta, "engine": "fast"}})
    rows = [ax.get_ylabel() for ax in fig.axes if ax.get_images() and ax.get_ylabel()]
    assert len(rows) == 2 and "APPROXIMATE (AtP)" in rows[0] and "APPROXIMATE" not in rows[1]


def test_validation_figure_is_drawn_off_screen(tmp_path):
    # the figure behind docs/approximation.png: three kinds, exact vs AtP maps and the per-prompt ρ histogram
    import sys

    from crosstrace.approximation import figure

    base = _ie_table({0: np.array([[0.3, 0.1], [0.2, 0.4], [0.0, 0.1]]), 1: np.array([[0.1, 0.2], [0.3, 0.0], [0.1, 0.1]])})
    exact = pd.concat([base, base[base["kind"] == "mlp"].assign(kind="attn")], ignore_index=True)
    approx = exact.assign(ie=exact["ie"] * 1.5)
    per_prompt, _ = compare(exact, approx, k=2)
    had_pyplot = "matplotlib.pyplot" in sys.modules
    figure(exact, approx, per_prompt, tmp_path / "approximation.png")
    assert (tmp_path / "approximation.png").stat().st_size > 10_000
    assert had_pyplot or "matplotlib.pyplot" not in sys.modules
