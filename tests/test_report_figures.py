"""Report figures and pages on constructed tables (fast; each test can fail)."""

from __future__ import annotations

import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT
from matplotlib.patches import Rectangle

from crosstrace.report import figures as F
from crosstrace.report import html
from crosstrace.report.stats import aie_table, paired_comparison

KINDS = ("hidden", "mlp", "attn")


def category_ie(model="m", modality="t2t", n_prompts=8, layers=4, shift=0.0, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_prompts):
        for kind in KINDS:
            for cat in F.CATEGORIES:
                if cat == "middle_subject" and k % 2:  # half the prompts lack a middle subject token
                    continue
                for layer in range(layers):
                    base = 0.2 if cat == "last_subject" and kind == "mlp" else 0.0
                    rows.append(dict(model=model, modality=modality, known_id=k, kind=kind, category=cat,
                                     layer=layer, ie=base + shift + rng.normal(0, 0.05)))
    return pd.DataFrame(rows)


def test_categories_match_the_tracer():
    from crosstrace.vocabulary import CATEGORIES, CATEGORY_LABELS

    assert tuple(F.CATEGORIES) == tuple(CATEGORIES)
    assert F.CATEGORY_LABELS == CATEGORY_LABELS


def test_figures_module_does_not_import_torch():
    code = "import sys, crosstrace.report.figures, crosstrace.report.html; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""}, check=True)
    assert out.stdout.strip() == "False"


def test_ci_zero_mask_and_hatching():
    aie = aie_table(category_ie(), n_boot=200, seed=0, category_mean="per_prompt")
    sub = aie[aie["kind"] == "mlp"]
    mask = F.ci_zero_mask(sub)
    mat = F.aie_matrix(sub)[0]
    lo, hi = F.aie_matrix(sub, "ci_low")[0], F.aie_matrix(sub, "ci_high")[0]
    assert mask.shape == mat.shape
    assert not mask[F.CATEGORIES.index("last_subject")].any()  # IE ≈ 0.2 ± 0.05: CI far from 0
    assert mask.sum() > 0  # the noise-only cells mostly straddle 0
    np.testing.assert_array_equal(mask, (lo <= 0) & (hi >= 0))
    fig = F.heatmap_figure(aie, "mlp", {"model": "m", "modality": "t2t", "window": 2, "noise_scale": 0.35,
                                        "samples": 10}, mask_ci_zero=True, ci_panel=True)
    heat_axes = [ax for ax in fig.axes if ax.get_images() and ax.get_title()]
    assert len(heat_axes) == 2  # AIE + CI width
    hatched = [p for p in heat_axes[0].patches if isinstance(p, Rectangle) and p.get_hatch()]
    assert len(hatched) == int(mask.sum())
    assert "n = 8 prompts" in heat_axes[0].get_title() and "ν = 0.35" in heat_axes[0].get_title()
    # CI-width panel shares the AIE panel's log scale
    n0, n1 = heat_axes[0].get_images()[0].norm, heat_axes[1].get_images()[0].norm
    assert (n0.vmin, n0.vmax) == (n1.vmin, n1.vmax)
    plt.close(fig)
    fig = F.heatmap_figure(aie, "mlp", {"model": "m", "modality": "t2t", "noise_scale": None, "samples": 2})
    assert len([ax for ax in fig.axes if ax.get_images() and ax.get_title()]) == 1
    plt.close(fig)


@pytest.mark.parametrize("answer,text", [(None, "o = clean top-1 token"), ("attribute_first", "attribute's first token"),
                                         ("attribute_full", "whole attribute (joint P")])
def test_titles_name_the_answer(answer, text):
    aie = aie_table(category_ie(n_prompts=3), n_boot=20, seed=0, category_mean="per_prompt")
    meta = {"model": "m", "modality": "t2t", "noise_scale": 0.35, "samples": 10, **({"answer": answer} if answer else {})}
    fig = F.heatmap_figure(aie, "mlp", meta)
    assert text in fig.axes[0].get_title()
    plt.close(fig)
    fig = F.prompt_trace_figure(["a", "b"], (0, 1), {"mlp": np.full((2, 3), 0.2)}, " Paris", 0.3, 0.1, window=2,
                                answer_mode=answer or "top1")
    assert text in fig._suptitle.get_text() and "Paris" in fig._suptitle.get_text()
    plt.close(fig)


def test_panel_figure_shares_scale_per_column(tmp_path):
    cat = pd.concat([category_ie("a"), category_ie("b", shift=0.5, seed=1)])
    aie = aie_table(cat, n_boot=50, category_mean="per_prompt")
    rows = [("a", "t2t"), ("b", "t2t")]
    fig = F.panel_figure(aie, rows, KINDS, meta={("a", "t2t"): {"noise_scale": 0.1}})
    axes = np.array([ax for ax in fig.axes if ax.get_images()]).reshape(2, 3)  # colour bars hold no image
    for j in range(3):
        norms = [axes[i, j].get_images()[0].norm for i in range(2)]
        assert norms[0].vmin == norms[1].vmin and norms[0].vmax == norms[1].vmax
        # the column's scale spans both runs: b (shifted up) sets the maximum
        assert norms[0].vmax == pytest.approx(aie.loc[aie["kind"] == KINDS[j], "aie"].max())
    assert [ax.get_title() for ax in axes[0]] == ["hidden states", "MLP", "attention"]  # kinds title the columns
    assert "ν = 0.1" in axes[0, 0].get_ylabel() and "ν" not in axes[1, 0].get_ylabel()  # runs label the rows
    paths = [tmp_path / "p.png", tmp_path / "p.pdf"]
    F.save(fig, paths)
    assert paths[1].read_bytes()[:5] == b"%PDF-" and paths[0].stat().st_size > 10000


def test_difference_figure_marks_significant_cells():
    cat = pd.concat([category_ie("a", n_prompts=12), category_ie("b", n_prompts=12, seed=1)])
    cat.loc[(cat["model"] == "a") & (cat["kind"] == "attn") & (cat["category"] == "last"), "ie"] += 1.0
    comp = paired_comparison(cat, ("a", "t2t"), ("b", "t2t"), n_perm=2000, seed=0, category_mean="per_prompt")
    fig = F.difference_figure(comp, KINDS, 0.05, "a − b")
    axes = [ax for ax in fig.axes if ax.get_images() and ax.get_title()]
    for ax, kind in zip(axes, KINDS, strict=True):
        n_sig = int(comp.loc[comp["kind"] == kind, "significant"].sum())
        dots = sum(len(c.get_offsets()) for c in ax.collections)
        assert dots == n_sig
        assert f"{n_sig} cell(s) with q < 0.05" in ax.get_title()
    assert int(comp.loc[comp["kind"] == "attn", "significant"].sum()) >= 4  # the shifted last-token row
    plt.close(fig)


def test_stage_counts_and_page():
    summary = {"records": 10, "known": 6, "known_exact": 4, "known_partial": 2, "traced": 4}
    q = pd.DataFrame({"known_id": [3], "stage": ["trace"], "reason": ["no subject <span>"]})
    c = html.stage_counts(summary, validation_quarantined=2, trace_quarantine=q).set_index("stage")["count"]
    assert c["Known records read"] == 12 and c["valid records"] == 10
    assert c["selected for tracing"] == 5 and c["quarantined in tracing"] == 1 and c["traced"] == 4
    assert c["known: exact"] + c["known: partial"] == c["known (exact or partial)"]
    page = html.page("QC <x>", [("Quarantined", html.table(q))])
    assert "no subject &lt;span&gt;" in page and "QC &lt;x&gt;" in page and page.startswith("<!DOCTYPE html>")
