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
    """AIE is the mean over prompts of the committed per-prompt category table, in dataset order."""
    cats = pd.read_parquet(STUDY / "category_ie.parquet")
    prompts = pd.read_csv(STUDY / "prompts.csv")
    assert cats["known_id"].nunique() == len(prompts) == aie["n"].max()
    mean = cats.groupby(["kind", "category", "layer"])["ie"].mean()
    got = aie.set_index(["kind", "category", "layer"])["aie"]
    np.testing.assert_allclose(got.sort_index(), mean.reindex(got.index).sort_index(), atol=1e-6)
    assert (aie["ci_low"] <= aie["aie"] + 1e-9).all() and (aie["aie"] <= aie["ci_high"] + 1e-9).all()
    assert prompts["known_id"].is_monotonic_increasing


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
