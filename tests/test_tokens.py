"""Subject spans from character offsets and the six token categories, on hand-checked cases."""

import numpy as np
import pytest

from crosstrace.spans import SpanError, category_means, category_positions, token_span_from_offsets
from crosstrace.trace.tokens import encode_prompt


def test_categories_multi_token_subject_in_the_middle():
    # tokens: The mother tongue of [Daniel le Dar rie ux] is  -> span [4, 9), T = 10
    assert category_positions((4, 9), 10) == {
        "first_subject": [4],
        "middle_subject": [5, 6, 7],
        "last_subject": [8],
        "first_subsequent": [9],
        "last": [9],
    }


def test_categories_single_token_subject_is_first_and_last():
    cats = category_positions((0, 1), 5)  # [Apple] 's headquarters are in
    assert cats == {"first_subject": [0], "last_subject": [0], "first_subsequent": [1], "further": [2, 3], "last": [4]}


def test_categories_two_token_subject_has_no_middle_and_subject_at_end():
    assert category_positions((3, 5), 5) == {"first_subject": [3], "last_subject": [4], "last": [4]}


def test_category_means_average_positions():
    ie = np.arange(14, dtype=float).reshape(7, 2)  # 7 tokens × 2 layers, subject [1, 4)
    m = category_means(ie, (1, 4))
    np.testing.assert_array_equal(m["middle_subject"], [4.0, 5.0])  # row 2 only
    np.testing.assert_array_equal(m["first_subsequent"], [8.0, 9.0])  # row 4
    np.testing.assert_array_equal(m["further"], [10.0, 11.0])  # row 5 only (T-2 = 5)
    np.testing.assert_array_equal(m["last"], [12.0, 13.0])


def test_span_errors():
    with pytest.raises(SpanError, match="not inside"):
        category_positions((3, 7), 5)
    with pytest.raises(SpanError, match="no token overlaps"):
        token_span_from_offsets([(0, 0), (0, 3)], 5, 8)


def test_offsets_include_partial_overlaps_and_skip_special_tokens():
    offsets = [(0, 0), (0, 2), (2, 7), (7, 11), (11, 13)]  # BOS, Ph ilipp ines 's
    assert token_span_from_offsets(offsets, 0, 11) == (1, 4)


@pytest.fixture(scope="module")
def smol_tok(cache_dir):
    from transformers import AutoTokenizer

    from crosstrace.models.loading import prepare_model

    return AutoTokenizer.from_pretrained(prepare_model("smollm2-135m-offline", cache_dir))


@pytest.mark.parametrize(
    "prompt,subject,span,subject_tokens",
    [
        ("Philippines's capital,", "Philippines", (0, 3), ["Ph", "ilipp", "ines"]),
        ("Apple's headquarters are in", "Apple", (0, 1), ["Apple"]),
        ("The mother tongue of Danielle Darrieux is", "Danielle Darrieux", (4, 9), [" Daniel", "le", " Dar", "rie", "ux"]),
        ("Vinson Massif is located in the continent of", "Vinson Massif", (0, 4), ["V", "inson", " Mass", "if"]),
    ],
)
def test_smollm2_subject_spans(smol_tok, prompt, subject, span, subject_tokens):
    enc = encode_prompt(smol_tok, prompt, subject)
    assert enc.subject_span == span
    assert [smol_tok.decode([i]) for i in enc.input_ids[span[0] : span[1]]] == subject_tokens


def test_subject_missing_from_prompt_is_an_error(smol_tok):
    with pytest.raises(SpanError, match="does not occur"):
        encode_prompt(smol_tok, "Paris is the capital of", "Rome")
