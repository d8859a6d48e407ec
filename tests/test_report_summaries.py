"""The compare and similarity report steps (report.compare, report.similarity) on constructed inputs with
hand-checked answers, including the empty cases the tiny DAGs never reach."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from crosstrace.report.compare import COLUMNS, write_comparison
from crosstrace.report.similarity import (
    SIMILARITY_COLUMNS,
    similarity_by_layer,
    similarity_long,
    write_similarity,
)
from crosstrace.report.stats import aie_table

STATS = {"n_perm": 200, "seed": 0, "alpha": 0.05, "n_boot": 50, "level": 0.9, "category_mean": "per_prompt"}
A, B = {"model": "m", "modality": "t2t"}, {"model": "m", "modality": "s2t"}
# per run and kind: the IE of every prompt at (last, layer 0) and (last, layer 1)
IE = {"t2t": {"hidden": (0.2, 0.2), "mlp": (0.1, 0.4), "attn": (0.1, 0.1)},
      "s2t": {"hidden": (0.2, 0.2), "mlp": (0.1, 0.1), "attn": (0.0, 0.0)}}


def run_tables(tmp_path, ids_a, ids_b):
    paths = {}
    for modality, ids in (("t2t", ids_a), ("s2t", ids_b)):
        cat = pd.DataFrame([dict(model="m", modality=modality, known_id=k, kind=kind, category="last", layer=layer,
                                 ie=ie) for k in ids for kind, ies in IE[modality].items()
                            for layer, ie in enumerate(ies)])
        paths[f"cat_{modality}"] = tmp_path / f"cat_{modality}.parquet"
        paths[f"aie_{modality}"] = tmp_path / f"aie_{modality}.parquet"
        cat.to_parquet(paths[f"cat_{modality}"])
        aie_table(cat, n_boot=20, category_mean="per_prompt").to_parquet(paths[f"aie_{modality}"])
    return paths


def compare(tmp_path, ids_a, ids_b, pair=(A, B)):
    p = run_tables(tmp_path, ids_a, ids_b)
    out = tmp_path / "out"
    figures = [out / "diff.png"]
    write_comparison(p["cat_t2t"], p["cat_s2t"], p["aie_t2t"], p["aie_s2t"], pair, ["hidden", "mlp", "attn"], STATS,
                     out / "comparison.parquet", out / "summary.json", figures, out / "summary.html")
    return (pd.read_parquet(out / "comparison.parquet"), json.loads((out / "summary.json").read_text()),
            (out / "summary.html").read_text(), figures[0])


def test_comparison_summary_hand_checked(tmp_path):
    table, summary, page, figure = compare(tmp_path, [0, 1, 2, 3], [0, 1, 2, 5])
    assert summary["n_pairs"] == 3 and (table["n"] == 3).all() and len(table) == 3 * 2
    assert summary["by_kind"] == {k: {"cells": 2, "significant": 0, "n_pairs_max": 3} for k in ("hidden", "mlp", "attn")}
    ratios = summary["peak_ratios"]
    # every prompt has the same IE, so each bootstrap resample gives the point ratio
    assert ratios["mlp"]["sentence"] == "T→T peak AIE (MLP) is 4.0× S→T (90% CI 4.0–4.0)"
    assert ratios["mlp"]["ratio"] == pytest.approx(4.0)
    assert ratios["hidden"]["sentence"] == "T→T peak AIE (hidden states) is 1.0× S→T (90% CI 1.0–1.0)"
    assert ratios["attn"]["sentence"] is None and "is 0.0; a ratio is not meaningful" in ratios["attn"]["why_not"]
    assert {(r["modality"], r["kind"]): r["peak_aie"] for r in summary["peaks"]}[("t2t", "mlp")] == pytest.approx(0.4)
    assert {k: summary[k] for k in ("n_perm", "alpha", "seed")} == {"n_perm": 200, "alpha": 0.05, "seed": 0}
    for section in ("Peak ratios (quotable)", "Significant cells per kind", "Peaks", "Smallest q-values",
                    "T→T peak AIE (MLP) is 4.0×", "attn: no ratio ("):
        assert section in page
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_shared_prompt_gives_empty_table_not_a_failed_job(tmp_path):
    table, summary, page, figure = compare(tmp_path, [0, 1], [2, 3])
    assert table.empty and list(table.columns) == COLUMNS
    assert summary["n_pairs"] == 0
    assert summary["by_kind"]["mlp"] == {"cells": 0, "significant": 0, "n_pairs_max": 0}
    assert summary["peak_ratios"]["mlp"]["ratio"] == pytest.approx(4.0)  # peaks need no pairs
    assert "0 prompts traced in both" in page and figure.exists()


def test_comparing_a_run_with_itself_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="a and b are the same run"):
        compare(tmp_path, [0, 1], [0, 1], pair=(A, A))


def states(n, skipped=()):
    rng = np.random.default_rng(3)
    text = {p: rng.normal(size=(n, 3, 4)) for p in ("subject", "last")}
    return SimpleNamespace(
        known_ids=list(range(n)), text=text, speech={p: x + rng.normal(size=x.shape) for p, x in text.items()},
        positions=pd.DataFrame({"known_id": range(n), "t2t_subject": 1}), skipped=list(skipped), token_rows="spoken")


def test_similarity_table_is_the_statistics_of_each_position(tmp_path):
    s = states(5)
    st = {"seed": 7, "n_random": 3, "n_boot": 40, "level": 0.9}
    figures = [tmp_path / "sim.png", tmp_path / "sim.pdf"]
    table = write_similarity("spirit", s, 6, st, tmp_path / "sim.parquet", tmp_path / "sim.html", figures)
    want = similarity_long({p: similarity_by_layer(s.text[p], s.speech[p], np.random.default_rng([7, i]),
                                                   n_random=3, n_boot=40, level=0.9)
                            for i, p in enumerate(("subject", "last"))})
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "sim.parquet"), table)
    pd.testing.assert_frame_equal(table.drop(columns=["model", "token_rows"]), want)
    assert (table["model"] == "spirit").all() and (table["token_rows"] == "spoken").all() and len(table) == 2 * 2 * 3
    page = (tmp_path / "sim.html").read_text()
    assert "last spoken text token (speech.token_rows: spoken" in page
    assert "Prompts in both Known sets: 6; used: 5" in page and "<h2>Skipped prompts</h2><p class=\"note\">none" in page
    assert figures[0].read_bytes()[:4] == b"\x89PNG" and figures[1].read_bytes()[:5] == b"%PDF-"


def test_similarity_with_one_prompt_says_why_it_is_empty(tmp_path):
    s = states(1, skipped=[(4, "known_id=4: subject not found")])
    st = {"seed": 0, "n_random": 3, "n_boot": 40, "level": 0.9}
    figures = [tmp_path / "sim.png"]
    table = write_similarity("spirit", s, 2, st, tmp_path / "sim.parquet", tmp_path / "sim.html", figures)
    assert table.empty and list(pd.read_parquet(tmp_path / "sim.parquet").columns) == ["model", "token_rows",
                                                                                         *SIMILARITY_COLUMNS]
    page = (tmp_path / "sim.html").read_text()
    assert "1 prompt(s) in both sets with a subject span; the random baseline needs at least 2" in page
    assert "known_id=4: subject not found" in page
    assert figures[0].read_bytes()[:4] == b"\x89PNG"
