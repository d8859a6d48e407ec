"""Statistics and report integration on the shared finished run (conftest ``demo_run``): the whole DAG
(validate → filter → noise → trace → merge with bootstrap CIs → figures, panels, peaks, QC, a paired comparison
of two runs) and `snakemake --report`; one rerun of the merge on a copy of the run."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from conftest import copy_run
from workflow_run import DEMO_RUN, DEMO_RUN_MODELS, run_to_completion

from crosstrace.report.stats import aie_table

pytestmark = pytest.mark.slow

RUNS = [("tiny", "t2t"), ("spirit", "t2t")]  # the pair compared (stats.compare)
N_PROMPTS = 4
STATS = {k: DEMO_RUN["stats"][k] for k in ("n_boot", "seed", "level", "n_perm", "alpha")}


@pytest.fixture(scope="module")
def run(demo_run):
    return demo_run


def test_aie_has_bootstrap_cis(run):
    for m, mod in RUNS:
        d = run / "results" / m / mod
        aie = pd.read_parquet(d / "aie.parquet")
        assert list(aie.columns) == ["model", "modality", "kind", "category", "layer", "aie", "n", "n_positions",
                                     "ci_low", "ci_high", "answer_mode", "category_mean"]
        assert set(aie["answer_mode"]) == {"top1"} and set(aie["category_mean"]) == {"rome"}  # the defaults, recorded
        assert len(aie) > 0 and aie[["aie", "ci_low", "ci_high"]].notna().all().all()
        tol = 1e-12
        assert (aie["ci_low"] <= aie["aie"] + tol).all() and (aie["aie"] <= aie["ci_high"] + tol).all()
        assert (aie["ci_high"] > aie["ci_low"]).any(), "3 random prompts should give CIs of positive width"
        # n = prompts having the category (the per-prompt category table is the reference)
        cats = pd.read_parquet(d / "category_ie.parquet")
        assert cats["known_id"].nunique() == N_PROMPTS
        want = (cats.dropna(subset=["ie"]).groupby(["kind", "category", "layer"])["known_id"].nunique())
        got = aie.set_index(["kind", "category", "layer"])["n"]
        pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False, check_dtype=False)
        assert aie.loc[aie["category"] == "last", "n"].eq(N_PROMPTS).all()
        # same seed → the same table; a different seed → different CIs, same means
        again = aie_table(cats, n_boot=STATS["n_boot"], seed=STATS["seed"], level=STATS["level"])
        pd.testing.assert_frame_equal(again, aie)
        narrow = aie_table(cats, n_boot=STATS["n_boot"], seed=STATS["seed"], level=0.5)
        np.testing.assert_allclose(narrow["aie"], aie["aie"])
        assert (narrow["ci_low"] >= aie["ci_low"] - tol).all() and (narrow["ci_high"] <= aie["ci_high"] + tol).all()


def test_rerun_merge_is_bitwise_identical(run, tmp_path):
    """Rerunning the merge rule with the same seed writes the same aie.parquet, byte for byte."""
    copy = copy_run(run, tmp_path / "run")
    aie = copy / "results" / "tiny" / "t2t" / "aie.parquet"
    before = aie.read_bytes()
    r = run_to_completion(copy, "--cores", "2", "--forcerun", "merge", "--until", "merge")
    assert "rule merge:" in r.stderr and aie.stat().st_mtime > (run / "results" / "tiny" / "t2t" / "aie.parquet").stat().st_mtime
    assert aie.read_bytes() == before


def test_compare(run):
    d = run / "results" / "compare" / "tiny_t2t_vs_spirit_t2t"
    comp = pd.read_parquet(d / "comparison.parquet")
    assert len(comp) > 0
    assert comp["n"].max() == N_PROMPTS and comp.loc[comp["category"] == "last", "n"].eq(N_PROMPTS).all()
    assert comp["q"].between(0, 1).all() and comp["p"].between(0, 1).all()
    assert (comp["q"] >= comp["p"] - 1e-12).all()
    assert set(comp["kind"]) == {"hidden", "mlp", "attn"}
    # the difference is a − b of the two runs' AIE over the shared prompts: in a cell where both runs have every
    # prompt (the two tokenizers split some subjects differently, so not every category is in both), a − b of AIE
    a = pd.read_parquet(run / "results" / "tiny" / "t2t" / "aie.parquet").set_index(["kind", "category", "layer"])
    b = pd.read_parquet(run / "results" / "spirit" / "t2t" / "aie.parquet").set_index(["kind", "category", "layer"])
    c = comp.set_index(["kind", "category", "layer"])
    full = c.index[(c["n"] == N_PROMPTS) & (a["n"].loc[c.index] == N_PROMPTS).to_numpy() & (b["n"].loc[c.index] == N_PROMPTS).to_numpy()]
    assert set(full.get_level_values("category")) >= {"first_subject", "last_subject", "last"}
    np.testing.assert_allclose(c.loc[full, "diff"], (a["aie"] - b["aie"]).loc[full], atol=1e-12)
    summary = json.loads((d / "summary.json").read_text())
    assert summary["n_pairs"] == N_PROMPTS
    assert set(summary["peak_ratios"]) == {"hidden", "mlp", "attn"}
    assert {(p["model"], p["kind"]) for p in summary["peaks"]} == {(m, k) for m, _ in RUNS for k in ("hidden", "mlp", "attn")}
    for ext in ("png", "pdf"):
        assert (d / f"diff.{ext}").stat().st_size > 5000
    assert "tiny T→T vs spirit T→T" in (d / "summary.html").read_text()


def test_panels_peaks_qc(run):
    r = run / "results"
    for ext in ("png", "pdf"):
        assert (r / "figures" / f"aie_panels.{ext}").stat().st_size > 10000
    assert (r / "figures" / "aie_panels.pdf").read_bytes()[:5] == b"%PDF-"
    peaks = pd.read_parquet(r / "tables" / "peaks.parquet")
    assert len(peaks) == len(DEMO_RUN_MODELS) * 3  # every run, each kind
    for m, mod in DEMO_RUN_MODELS:
        aie = pd.read_parquet(r / m / mod / "aie.parquet")
        for _, p in peaks[(peaks["model"] == m) & (peaks["modality"] == mod)].iterrows():
            assert p["peak_aie"] == pytest.approx(aie.loc[aie["kind"] == p["kind"], "aie"].max())
        html = (r / m / mod / "qc.html").read_text()
        summary = json.loads((r / m / mod / "summary.json").read_text())
        assert summary["ci"]["n_boot"] == STATS["n_boot"]
        traced = N_PROMPTS if mod == "t2t" else 2  # S→T: the two records spoken (speech.max_prompts)
        assert f"<td>traced</td><td class=\"num\">{traced}</td>" in html
        assert "<td>valid records</td><td class=\"num\">6</td>" in html
        assert (r / m / mod / "figures" / "counts.png").exists()
        for kind in ("hidden", "mlp", "attn"):
            assert (r / m / mod / "figures" / f"aie_{kind}.png").exists()


def test_report_html(run):
    raw = (run / "report.html").read_text(encoding="utf-8")
    assert len(raw) > 100_000
    # captions sit in the page as JSON strings: undo \n and \uXXXX escapes before searching
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), raw.replace("\\n", " "))
    for fragment in (
        "laid out as the paper's Figure 2",  # aie_panels.rst
        "Black dots mark cells",  # compare_diff.rst
        "Quality control for <strong>tiny t2t</strong>",  # qc.rst, wildcards filled in
        "cells with AIE ≤ 0 cannot be logged",  # aie_heatmap.rst
        "Gaussian on the subject embeddings, 2 draws per prompt",  # config values filled in
        "runs causal tracing",  # workflow.rst
        "resamples, level 0.9",  # workflow.rst, stats config
        "stats.category_mean: rome</tt>): the mean P_restored[o] over every token",  # workflow.rst
        "stats.category_mean: rome</tt>): every token of the category, of every prompt",  # aie_heatmap.rst
        "over all traced prompts. The title gives n",  # aie_heatmap.rst: a space after the switch's sentence
    ):
        assert fragment in text, fragment
    for name in ("aie_panels.png", "diff.png", "qc.html", "counts.png", "aie_mlp.png", "peaks.html", "config.html",
                 "traced_prompts.html"):
        assert name in raw, name
