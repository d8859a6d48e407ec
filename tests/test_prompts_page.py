"""ROME's expect check (does the traced answer start the attribute?), the selection it drives
(filter.expect_answer), and the traced-prompts table and page built from it."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from crosstrace.filtering import answer_matches, select_for_trace, unexpected_answers
from crosstrace.report import prompts as P


@pytest.mark.parametrize("answer,attribute,ok", [
    (" Latin", "Latin", True), (" Lat", "Latin", True), (" original", "Latin", False), (" the", "Microsoft", False),
    (" los", "Los Angeles", True), ("", "Latin", False), (" ", "Latin", False), (" Europe", "Europe", True),
])
def test_answer_matches(answer, attribute, ok):
    assert answer_matches(answer, attribute) is ok


def _known() -> pd.DataFrame:
    return pd.DataFrame({
        "known_id": [6, 9, 12, 20], "subject": ["Catalonia", "De finibus", "Il Gazzettino", "X"],
        "attribute": ["Europe", "Latin", "Italian", "Y"],
        "prompt": ["Catalonia belongs to the continent of", "The language of De finibus is the same as the",
                   "Il Gazzettino was written in the", "X is"],
        "continuation": [" Europe, and", " original language of the Latin", " Italian film", " nothing"],
        "first_token": [" Europe", " original", " Italian", " nothing"],
        "label": ["exact", "partial", "exact", "none"], "known": [True, True, True, False], "status": "ok",
    })


def test_expect_answer_selection():
    known = _known()
    assert unexpected_answers(known)["known_id"].tolist() == [9, 20]
    assert select_for_trace(known, None, expect_answer="flag")["known_id"].tolist() == [6, 9, 12]
    assert select_for_trace(known, None, expect_answer="trace")["known_id"].tolist() == [6, 9, 12]
    assert select_for_trace(known, 2, expect_answer="skip")["known_id"].tolist() == [6, 12]  # cap after skipping
    with pytest.raises(ValueError, match="expect_answer"):
        select_for_trace(known, None, expect_answer="maybe")


def _ie(known_ids, answers, p_clean, p_corrupted, T=4, L=3) -> pd.DataFrame:
    rows = []
    for kid, a, pc, pk in zip(known_ids, answers, p_clean, p_corrupted, strict=True):
        for kind in ("hidden", "mlp"):
            for t in range(T):
                for layer in range(L):
                    p = pk + 0.1 * t * layer
                    rows.append(dict(known_id=kid, kind=kind, token_index=t, token=f" t{t}", layer=layer, ie=p - pk,
                                     p_restored=p, p_clean=pc, p_corrupted=pk, answer=a, subject_start=0,
                                     subject_end=2, n_tokens=T))
    return pd.DataFrame(rows)


def test_traced_table_flags_and_page_links():
    ie = _ie([6, 9, 12], [" Europe", " original", " Italian"], [0.5, 0.251, 0.4], [0.1, 0.356, 0.05])
    table = P.traced_table(ie, _known())
    assert table.columns.tolist() == P.TABLE_COLUMNS and table["known_id"].tolist() == [6, 9, 12]
    assert table["answer_expected"].tolist() == [True, False, True]
    assert table["corruption_lowers_p"].tolist() == [True, False, True]
    assert table.loc[1, "label"] == "partial" and table.loc[1, "figure"] == "prompts/9.png"
    tokens, span, mats = P.prompt_arrays(ie, 9)
    assert tokens == [" t0", " t1", " t2", " t3"] and span == (0, 2) and mats["mlp"][3, 2] == pytest.approx(0.956)
    figs = dict(P.prompt_figures(ie, table, "m", "t2t", window=2))
    assert sorted(figs) == [6, 9, 12]
    title = figs[9]._suptitle.get_text()
    assert "known_id 9" in title and "P_clean = 0.251, P_corrupted = 0.356" in title
    assert "corruption does not lower P(o)" in figs[9]._supxlabel.get_text()
    assert "does not start the attribute 'Latin'" in figs[9]._supxlabel.get_text()
    gallery = {k: P.png_data_uri(figs[k]) for k in (6, 9)}  # a gallery of 2: row 12 links to its file
    for f in figs.values():
        plt.close(f)
    page = P.page(table, {"model": "m", "modality": "t2t"}, gallery, 2)
    assert page.count('<figure id="p') == 2 and page.count("data:image/png;base64,") == 2
    assert '<a href="#p9">9</a>' in page and '<a href="prompts/12.png">12</a>' in page
    assert page.count("<tr class=flag>") == 1 and "answer ≠ attribute" in page and "P_corrupted ≥ P_clean" in page
    assert "<b>De finibus</b>" in page and "WARNING" not in page
    assert "the first 2 prompts (figures.gallery = 2)" in page


def test_page_of_an_empty_run_warns():
    table = P.traced_table(_ie([], [], [], []), _known())
    assert table.empty
    page = P.page(table, {"model": "m", "modality": "t2t", "warning": "no prompt was traced for m t2t"}, {}, 24)
    assert "WARNING: no prompt was traced for m t2t" in page and "0 prompt(s) traced" in page
