"""S→T traces aggregated by text tokens (paper §2.4, App. A): word times → token times → units → IE.

The hand-built example is checked number for number; every expected value below was worked out by hand
(see the comments), not computed by the code under test. The word-time cases here use the preceding-word
rule for pauses (``pause_owner="preceding"``, the option); the default (pauses belong to no token) and the
spoken text tokens are checked in tests/test_spoken_rows.py.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from crosstrace.speech.align import PromptWord, TokenTimingError, token_times
from crosstrace.speech.pipeline import prompt_words_from_json, prompt_words_to_json
from crosstrace.speech.units import TokenUnitsError, token_unit_ranges
from crosstrace.trace.tables import (
    IE_COLUMNS,
    TextTokenMap,
    aggregate_by_text_tokens,
    category_table,
    unit_view,
)

# "Eiffel Tower is", subject "Eiffel"; text tokens E | iff | el | ▁Tower | ▁is (character offsets below)
PROMPT = "Eiffel Tower is"
TOKENS = ["E", "iff", "el", "▁Tower", "▁is"]
OFFSETS = [(0, 1), (1, 4), (4, 6), (6, 12), (12, 15)]
# word times (e.g. from TTS): Eiffel [0.10, 0.40), Tower [0.46, 0.80), is [0.84, 1.00); pauses in between
WORDS = [PromptWord("Eiffel", 0, 6, 0.10, 0.40), PromptWord("Tower", 7, 12, 0.46, 0.80),
         PromptWord("is", 13, 15, 0.84, 1.00)]
# 30 frames at 25 Hz (1.2 s) in 13 deduplicated units; unit j covers frames [F_j, F_j+1):
# F = 0 2 3 6 8 9 13 16 18 20 23 25 26 30  ->  seconds 0 .08 .12 .24 .32 .36 .52 .64 .72 .80 .92 1.00 1.04 1.20
RUNS = [2, 1, 3, 2, 1, 4, 3, 2, 2, 3, 2, 1, 4]


def test_token_times_by_character_share():
    starts, ends = token_times(PROMPT, OFFSETS, WORDS, pause_owner="preceding")
    # Eiffel lasts until Tower starts: [0.10, 0.46), 6 characters -> E 1/6, iff 3/6, el 2/6 of 0.36 s
    # Tower [0.46, 0.84) (until "is" starts), is [0.84, 1.00) (its own end: trailing silence is no token's)
    assert starts == pytest.approx([0.10, 0.16, 0.34, 0.46, 0.84])
    assert ends == pytest.approx([0.16, 0.34, 0.46, 0.84, 1.00])


def test_token_times_ctc_anchors_put_boundaries_on_character_frames():
    # CTC segments start: E 0.10, i 0.12, f 0.20, f 0.24, e 0.30, l 0.38 -> boundaries at "i" and "e"
    anchors = ((0, 0.10), (1, 0.12), (2, 0.20), (3, 0.24), (4, 0.30), (5, 0.38))
    words = [WORDS[0].__class__("Eiffel", 0, 6, 0.10, 0.40, anchors=anchors), *WORDS[1:]]
    starts, ends = token_times(PROMPT, OFFSETS, words, pause_owner="preceding")
    assert starts[:4] == pytest.approx([0.10, 0.12, 0.30, 0.46]) and ends[2] == pytest.approx(0.46)


def test_bare_space_token_and_merged_words():
    # Llama writes " 7" as a bare ▁ then "7": the ▁ weighs one character of the word after it
    prompt = "Windows 7 is"
    offsets = [(0, 7), (7, 8), (8, 9), (9, 12)]
    words = [PromptWord("Windows", 0, 7, 0.0, 0.5), PromptWord("7", 8, 9, 0.5, 0.9), PromptWord("is", 10, 12, 0.9, 1.1)]
    starts, ends = token_times(prompt, offsets, words)
    assert starts == pytest.approx([0.0, 0.5, 0.7, 0.9]) and ends[-1] == pytest.approx(1.1)
    # a TTS merge ("in the" read as one group) is shared by character share: in 2, the 3 -> 0.4 s, 0.6 s
    prompt = "in the city"
    words = [PromptWord("in", 0, 2, 1.0, 2.0), PromptWord("the", 3, 6, 1.0, 2.0), PromptWord("city", 7, 11, 2.0, 2.5)]
    starts, _ = token_times(prompt, [(0, 2), (2, 6), (6, 11)], words)
    assert starts == pytest.approx([1.0, 1.4, 2.0])


def test_token_times_quarantine_reasons():
    unplaced = [WORDS[0], PromptWord("Tower", 7, 12, math.nan, math.nan), WORDS[2]]
    with pytest.raises(TokenTimingError, match="could not place the word 'Tower'"):
        token_times(PROMPT, OFFSETS, unplaced)
    backwards = [WORDS[0], PromptWord("Tower", 7, 12, 0.05, 0.3), WORDS[2]]
    with pytest.raises(TokenTimingError, match="before 'Eiffel'"):
        token_times(PROMPT, OFFSETS, backwards)
    with pytest.raises(TokenTimingError, match="do not match"):
        token_times(PROMPT, OFFSETS, WORDS[:2])


def test_prompt_words_json_roundtrip():
    words = [PromptWord("a", 0, 1, 0.1, 0.2, anchors=((0, 0.1),)), PromptWord("-", 2, 3, math.nan, math.nan, spoken=False)]
    back = prompt_words_from_json(prompt_words_to_json(words))
    assert back[0] == words[0] and back[1].word == "-" and not back[1].spoken and math.isnan(back[1].start_s)


def test_token_unit_ranges_hand_computed():
    starts, ends = token_times(PROMPT, OFFSETS, WORDS, pause_owner="preceding")
    tu = token_unit_ranges(starts, ends, RUNS, names=TOKENS)
    # eq. 2 frames -> units: E [2,4)->[1,3); iff [4,9)->[2,5); el [8,12)->[4,6); Tower [11,21)->[5,10); is [21,25)->[9,11)
    assert list(zip(tu.eq2_start, tu.eq2_end, strict=True)) == [(1, 3), (2, 5), (4, 6), (5, 10), (9, 11)]
    # shared units by longer overlap: u2 [.12,.24) E .04 < iff .08; u4 [.32,.36) iff .02 = el .02 (tie: earlier);
    # u5 [.36,.52) el .10 > Tower .06; u9 [.80,.92) Tower .04 < is .08. u0 and u11, u12: silence
    assert list(zip(tu.unit_start, tu.unit_end, strict=True)) == [(1, 2), (2, 5), (5, 6), (6, 9), (9, 11)]
    assert (tu.lead, tu.trail, tu.n_units) == (1, 2, 13)


def test_a_short_token_keeps_a_unit_when_it_can():
    # "is" squeezed into 10 ms inside unit 9 [.80, .92), which Tower covers longer (.04 s): by longest overlap
    # "is" would own nothing, so unit 9 goes to "is" (the split with the most overlap that leaves no token empty)
    tu = token_unit_ranges([0.10, 0.16, 0.34, 0.46, 0.84], [0.16, 0.34, 0.46, 0.84, 0.85], RUNS, names=TOKENS)
    assert list(zip(tu.unit_start, tu.unit_end, strict=True)) == [(1, 2), (2, 5), (5, 6), (6, 9), (9, 10)]
    assert (tu.lead, tu.trail) == (1, 3)


def test_token_with_no_units_is_an_error():
    # one 1.2 s unit, two tokens: only one can own it
    with pytest.raises(TokenUnitsError, match=r"text token 1 'b' .* owns no speech unit") as e:
        token_unit_ranges([0.1, 0.5], [0.5, 0.9], [30], names=["a", "b"])
    assert e.value.token == 1
    with pytest.raises(TokenUnitsError, match="past the end of the audio"):
        token_unit_ranges([0.5, 1.3], [1.3, 1.5], RUNS)


def _unit_ie(known_id: int = 7, layers: int = 2) -> pd.DataFrame:
    """Per-unit IE rows of the hand example: [BOS, ▁, [Speech], 13 units, [Text]] = 17 LM positions,
    IE(p, l) = 10·p + l, P_corrupted 0.1 (so P_restored = IE + 0.1); the subject's units are LM 4..8."""
    rows = []
    for kind in ("hidden", "mlp"):
        for p in range(17):
            for layer in range(layers):
                ie = 10.0 * p + layer + (1000 if kind == "mlp" else 0)
                rows.append({"model": "m", "modality": "s2t", "known_id": known_id, "kind": kind, "token_index": p,
                             "token": f"t{p}", "layer": layer, "ie": ie, "p_restored": ie + 0.1, "p_clean": 0.9,
                             "p_corrupted": 0.1, "answer_id": 5, "answer": " x", "subject_start": 4,
                             "subject_end": 9, "n_tokens": 17, "noise_scale": 0.3, "samples": 2, "seed": 0,
                             "window": 2, "engine": "fast"})
    return pd.DataFrame(rows, columns=IE_COLUMNS)


def _map(known_id: int = 7) -> TextTokenMap:
    # offset 3 (BOS, ▁, [Speech]): LM positions = 3 + units; [Text] at 3 + 13 = 16
    ranges = [(3 + a, 3 + b) for a, b in [(1, 2), (2, 5), (5, 6), (6, 9), (9, 11)]]
    return TextTokenMap(known_id, TOKENS, ranges, (0, 3), 16, 17, 3)


def test_aggregation_number_for_number():
    ie, q = aggregate_by_text_tokens(_unit_ie(), {7: _map()})
    assert q.empty
    h = ie[(ie["kind"] == "hidden") & (ie["layer"] == 1)].sort_values("token_index")
    # E = pos 4 -> 41; iff = pos 5,6,7 -> 61; el = pos 8 -> 81; Tower = pos 9,10,11 -> 101; is = pos 12,13 -> 126;
    # [Text] = pos 16 -> 161
    assert h["token"].tolist() == [*TOKENS, "[Text]"]
    assert h["ie"].tolist() == pytest.approx([41, 61, 81, 101, 126, 161])
    assert h["p_restored"].tolist() == pytest.approx([41.1, 61.1, 81.1, 101.1, 126.1, 161.1])
    assert (h["n_tokens"] == 6).all() and (h["subject_start"] == 0).all() and (h["subject_end"] == 3).all()
    assert list(zip(h["pos_start"], h["pos_end"], strict=True)) == [(4, 5), (5, 8), (8, 9), (9, 12), (12, 14), (16, 17)]
    cats = category_table(ie)
    got = cats[(cats["kind"] == "hidden")].pivot(index="category", columns="layer", values="ie")
    # the six categories over text tokens, exactly as T→T: subject E iff el, then ▁Tower, ▁is, [Text]
    expected = {"first_subject": 40, "middle_subject": 60, "last_subject": 80, "first_subsequent": 100,
                "further": 125, "last": 160}
    for cat, v in expected.items():
        assert got.loc[cat].tolist() == pytest.approx([v, v + 1]), cat
    mlp = cats[(cats["kind"] == "mlp") & (cats["category"] == "last")]["ie"].tolist()
    assert mlp == pytest.approx([1160, 1161])


def test_aggregation_quarantines_a_prompt_without_a_fitting_map():
    ie = pd.concat([_unit_ie(7), _unit_ie(8)], ignore_index=True)
    bad = TextTokenMap(8, TOKENS, _map().ranges, (0, 3), 15, 16, 3)  # built for a shorter prompt
    out, q = aggregate_by_text_tokens(ie, {7: _map(), 8: bad})
    assert set(out["known_id"]) == {7}
    assert q["known_id"].tolist() == [8] and q["stage"].tolist() == ["aggregate"]
    assert "does not fit the trace" in q["reason"].iloc[0]
    _, q = aggregate_by_text_tokens(_unit_ie(9), {})
    assert "no text-token map" in q["reason"].iloc[0]


def test_unit_view_regions():
    view = unit_view(_unit_ie(), {7: _map()})
    one = view[(view["kind"] == "hidden") & (view["layer"] == 0)].sort_values("token_index")
    assert one["region"].tolist() == ["marker"] * 3 + ["silence"] + ["token"] * 10 + ["silence"] * 2 + ["last"]
    assert one["text_token_index"].tolist() == [-1] * 4 + [0, 1, 1, 1, 2, 3, 3, 3, 4, 4] + [-1] * 3
    assert one["text_token"].iloc[5] == "iff" and pd.isna(one["text_token"].iloc[0])
    assert np.array_equal(one["ie"].to_numpy(), 10.0 * np.arange(17))


def test_unit_figure_draws_token_boundaries(tmp_path):
    from crosstrace.report.figures import save, unit_figure

    view = unit_view(pd.concat([_unit_ie(7), _unit_ie(8)], ignore_index=True), {7: _map(7), 8: _map(8)})
    fig = unit_figure(view, "hidden", "m S→T", max_prompts=1)
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # one prompt (max_prompts) and its colour bar
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["E", "iff", "el", "Tower", "is"]
    assert [t.get_color() for t in ax.texts][:3] == ["red"] * 3  # the subject's tokens
    assert len(ax.lines) == 6  # a boundary before each token and after the last
    save(fig, [tmp_path / "u.png"])
    assert (tmp_path / "u.png").read_bytes()[:4] == b"\x89PNG"
    empty = unit_figure(view.iloc[0:0], "hidden", "m S→T")
    assert "no S→T prompt traced" in [t.get_text() for t in empty.axes[0].texts]
