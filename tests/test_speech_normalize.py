"""Text normalisation for the CTC alphabet (pure, fast)."""

from __future__ import annotations

import pytest

from crosstrace.speech.normalize import DEFAULT_VOCAB, normalize_for_ctc, subject_word_range


@pytest.mark.parametrize(
    ("text", "ctc"),
    [
        ("in the 1990s", "IN|THE|NINETEEN|NINETIES"),
        ("the 3rd and 21st", "THE|THIRD|AND|TWENTY|FIRST"),
        ("42 items", "FORTY|TWO|ITEMS"),
        ("born in 1066", "BORN|IN|ONE|THOUSAND|AND|SIXTY|SIX"),  # years only 1100-2099
        ("in 1815", "IN|EIGHTEEN|FIFTEEN"),
        ("Apple's CEO", "APPLE'S|CEO"),
        ("Apple\u2019s CEO", "APPLE'S|CEO"),
        ("Zürich and Ségolène Royal", "ZURICH|AND|SEGOLENE|ROYAL"),
        ("Hello, world! (really?)", "HELLO|WORLD|REALLY"),
        ("42% of", "FORTY|TWO|PERCENT|OF"),
        ("AT&T and Johnson & Johnson", "AT|AND|T|AND|JOHNSON|AND|JOHNSON"),
        ("Jean-Paul Sartre", "JEAN|PAUL|SARTRE"),
        ("1,000 and 3.5", "ONE|THOUSAND|AND|THREE|POINT|FIVE"),
    ],
)
def test_normalize_cases(text, ctc):
    n = normalize_for_ctc(text)
    assert n.ctc_string == ctc
    assert set(n.ctc_string) <= DEFAULT_VOCAB
    assert not n.unmappable


def test_word_map_back_to_original_tokens():
    n = normalize_for_ctc("Apple's 3rd office opened in the 1990s in Zürich")
    assert n.words == ["APPLE'S", "THIRD", "OFFICE", "OPENED", "IN", "THE", "NINETEEN", "NINETIES", "IN", "ZURICH"]
    assert n.word_to_orig == [0, 1, 2, 3, 4, 5, 6, 6, 7, 8]
    s, e = n.word_char_span(7)
    assert n.original[s:e] == "1990s"
    assert n.original[slice(*n.word_char_span(9))] == "Zürich"


def test_subject_word_range():
    p = "The mother tongue of Danielle Darrieux is"
    n = normalize_for_ctc(p)
    assert subject_word_range(n, p, "Danielle Darrieux") == (4, 6)
    p2 = "Apple's 42% stake in Zürich"
    n2 = normalize_for_ctc(p2)
    assert subject_word_range(n2, p2, "Apple") == (0, 1)  # the possessive stays with its word
    assert subject_word_range(n2, p2, "42%") == (1, 4)  # FORTY TWO PERCENT
    assert subject_word_range(n2, p2, "zürich") == (6, 7)  # case-insensitive fallback
    with pytest.raises(ValueError, match="not found"):
        subject_word_range(n2, p2, "Microsoft")


def test_unmappable_and_vocab_without_apostrophe():
    n = normalize_for_ctc("東京 is big")
    assert n.words == ["IS", "BIG"] and n.unmappable == ["東", "京"]
    n2 = normalize_for_ctc("Apple's", vocab=set("ABCDEFGHIJKLMNOPQRSTUVWXYZ|"))
    assert n2.words == ["APPLE", "S"] and "'" in n2.dropped


def test_subject_char_cut_inside_possessive():
    from crosstrace.speech.normalize import subject_char_cut, subject_char_span

    p = "In Finland\u2019s 3rd city"
    n = normalize_for_ctc(p)
    assert n.words[1] == "FINLAND'S" and n.char_to_orig[1][0] == 3
    assert subject_char_cut(n, 1, *subject_char_span(p, "Finland")) == (0, 7)
    assert subject_char_cut(n, 2, 0, len(p)) is None  # "3rd" was rewritten to THIRD
