"""The committed reference study (docs/results/smollm2-135m) shows ROME's signature of factual recall.

Reads the tables `make study` wrote; no model runs here. The checks themselves are
crosstrace.report.study.recall_signature, tested on constructed tables below.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crosstrace.report.study import recall_signature
from crosstrace.vocabulary import CATEGORIES

STUDY = Path(__file__).resolve().parents[1] / "docs" / "results" / "smollm2-135m"


@pytest.fixture(scope="module")
def aie():
    return pd.read_csv(STUDY / "aie.csv")


def test_committed_study_is_complete_and_small():
    names = {p.name for p in STUDY.iterdir()}
    assert {"aie.csv", "category_ie.parquet", "peaks.csv", "prompts.csv", "aie_panels.png", "provenance.json",
            "signature.json", "README.md"} <= names
    assert sum(p.stat().st_size for p in STUDY.iterdir()) < 5_000_000
    prov = json.loads((STUDY / "provenance.json").read_text())
    assert prov["commit"] and prov["machine"] and prov["wall_time_s"] > 0
    assert prov["prompts_traced"] >= 100
    t = prov["config"]["trace"]
    assert (t["kinds"], t["window"], t["noise"]["samples"]) == (["hidden", "mlp", "attn"], 10, 10)


def test_tables_agree(aie):
    """AIE is ROME's pooled mean over the committed category table: per cell, the positions of every prompt
    pooled (n_positions × mean P_restored), minus the mean P_corrupted of all 100 prompts; the tables say so."""
    cats = pd.read_parquet(STUDY / "category_ie.parquet")
    prompts = pd.read_csv(STUDY / "prompts.csv")
    assert cats["known_id"].nunique() == len(prompts) == aie["n"].max()
    assert set(aie["category_mean"]) == {"rome"} and set(aie["answer_mode"]) == {"top1"}
    assert set(cats["answer_mode"]) == {"top1"}
    cells = cats.assign(total=cats["n_positions"] * cats["p_restored"]).groupby(["kind", "category", "layer"])
    pooled = cells["total"].sum() / cells["n_positions"].sum() - prompts["p_corrupted"].mean()
    got = aie.set_index(["kind", "category", "layer"])
    np.testing.assert_allclose(got["aie"].sort_index(), pooled.reindex(got.index).sort_index(), atol=1e-6)
    assert (got["n_positions"] == cells["n_positions"].sum().reindex(got.index)).all()
    # the P_corrupted and span behind the pooled columns are those of prompts.csv
    per = cats.drop_duplicates("known_id").set_index("known_id")["p_corrupted"]
    np.testing.assert_allclose(per.sort_index(), prompts.set_index("known_id")["p_corrupted"].sort_index())
    assert (aie["ci_low"] <= aie["aie"] + 1e-9).all() and (aie["aie"] <= aie["ci_high"] + 1e-9).all()
    assert prompts["known_id"].is_monotonic_increasing


def test_regenerating_reproduces_the_committed_tables(tmp_path):
    """`python -m crosstrace.report.study --regenerate` on a copy of the study rewrites the same AIE table;
    per_prompt averaging gives the old per-prompt means (the first and last subject, first subsequent and last
    token rows agree with rome, the middle-subject and further rows move)."""
    import shutil

    from crosstrace.report.study import regenerate_study

    copy = tmp_path / "study"
    shutil.copytree(STUDY, copy)
    checks = regenerate_study(copy, "rome", commit="test")
    assert all(c.holds for c in checks)
    pd.testing.assert_frame_equal(pd.read_csv(copy / "aie.csv"), pd.read_csv(STUDY / "aie.csv"))
    regenerate_study(copy, "per_prompt", commit="test")
    per = pd.read_csv(copy / "aie.csv").set_index(["kind", "category", "layer"])
    cats = pd.read_parquet(STUDY / "category_ie.parquet")
    np.testing.assert_allclose(per["aie"].sort_index(),
                               cats.groupby(["kind", "category", "layer"])["ie"].mean().reindex(per.index).sort_index(),
                               atol=1e-6)
    rome = pd.read_csv(STUDY / "aie.csv").set_index(["kind", "category", "layer"])
    moved = (per["aie"] - rome["aie"]).abs().groupby("category").max()
    assert (moved[["first_subject", "last_subject", "first_subsequent", "last"]] < 1e-6).all()
    assert (moved[["middle_subject", "further"]] > 1e-3).all()
    assert json.loads((copy / "provenance.json").read_text())["regenerated"]["category_mean"] == "per_prompt"


@pytest.mark.parametrize("name", ["mlp_last_subject_peaks_early", "hidden_moves_subject_to_last",
                                  "attn_at_last_token_late"])
def test_committed_study_shows_the_recall_signature(aie, name):
    check = {c.name: c for c in recall_signature(aie)}[name]
    assert check.holds, check.detail


def _table(values: dict[tuple[str, str], np.ndarray], L: int = 12) -> pd.DataFrame:
    rows = []
    for kind in ("hidden", "mlp", "attn"):
        for cat in CATEGORIES:
            v = values.get((kind, cat), np.zeros(L))
            for layer in range(L):
                rows.append({"model": "m", "modality": "t2t", "kind": kind, "category": cat, "layer": layer,
                             "aie": v[layer], "n": 5, "ci_low": v[layer] - 0.01, "ci_high": v[layer] + 0.01})
    return pd.DataFrame(rows)


def test_signature_on_a_constructed_table():
    L = 12
    bump = np.exp(-0.5 * ((np.arange(L) - 3) / 1.5) ** 2) * 0.1  # peaks at layer 3
    ramp = np.linspace(0, 0.2, L)
    table = _table({("mlp", "last_subject"): bump, ("hidden", "last_subject"): 0.2 - ramp,
                    ("hidden", "last"): ramp, ("attn", "last"): np.r_[np.zeros(6), np.full(6, 0.1)]})
    assert all(c.holds for c in recall_signature(table))
    late_mlp = _table({("mlp", "last_subject"): bump[::-1], ("hidden", "last_subject"): 0.2 - ramp,
                       ("hidden", "last"): ramp, ("attn", "last"): np.r_[np.zeros(6), np.full(6, 0.1)]})
    by = {c.name: c for c in recall_signature(late_mlp)}
    assert not by["mlp_last_subject_peaks_early"].holds and "peaks at layer 8" in by["mlp_last_subject_peaks_early"].detail
    no_move = _table({("mlp", "last_subject"): bump, ("hidden", "last_subject"): np.full(L, 0.2),
                      ("hidden", "last"): np.full(L, 0.1), ("attn", "first_subject"): np.full(L, 0.2),
                      ("attn", "last"): np.full(L, 0.1)})
    by = {c.name: c for c in recall_signature(no_move)}
    assert not by["hidden_moves_subject_to_last"].holds and not by["attn_at_last_token_late"].holds


def test_signature_needs_one_run():
    t = _table({})
    two = pd.concat([t, t.assign(model="other")])
    with pytest.raises(ValueError, match="one run"):
        recall_signature(two)
