"""Text vs speech hidden states (crosstrace.representations) on the tiny SpiritLM: prompt sets, positions,
equivalence with transformers' own ``output_hidden_states``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from crosstrace.config import ModelSpec
from crosstrace.models.family import load, prepare
from crosstrace.representations import POSITIONS, block_states, matched_states, shared_prompts

pytestmark = pytest.mark.usefixtures("one_thread")

# Frames [5,5,7,7,7,9,9,5,5,5] at 25 Hz → dedup [5,7,9,5], runs [2,3,2,3]. A known-table row whose subject
# (text token 0) owns units [1, 3) and "▁is" unit 3 → positions [4, 6) of
# [1, 29871, 32001, 32007, 32009, 32011, 32007, 32000] (the reference ids, stray ▁ included).
DEDUP, RUNS = [5, 7, 9, 5], [2, 3, 2, 3]
S2T_IDS = [1, 29871, 32001, 32007, 32009, 32011, 32007, 32000]


@pytest.fixture(scope="module")
def spec(ckpt):
    s = ModelSpec.from_dict({"name": "tiny-spirit", "family": "spiritlm", "path": str(ckpt["root"]),
                             "modalities": ["t2t", "s2t"]})
    return replace(s, resolved=prepare(s))


@pytest.fixture(scope="module")
def lm(spec):
    return load(replace(spec, dtype="float32"))


def s2t_row(known_id: int, status: str = "ok", known: bool = True) -> dict:
    row = {
        "known_id": known_id,
        "status": status,
        "known": known,
        "dedup": DEDUP,
        "run_lengths": RUNS,
        "n_frames": 10,
        "n_units": 4,
        "text_tokens": ["S", "▁is"],
        "subject_token_start": 0,
        "subject_token_end": 1,
        "token_unit_start": [1, 3],
        "token_unit_end": [3, 4],
        "unit_offset": None,
        "pos_start": None,
        "pos_end": None,
    }
    if status == "ok":
        row.update(unit_offset=3, pos_start=4, pos_end=6)
    return row


def test_shared_prompts_is_the_intersection_in_t2t_order():
    t2t = pd.DataFrame({"known_id": [3, 0, 1, 2], "known": [False, True, True, True], "status": "ok"})
    s2t = pd.DataFrame(
        [
            s2t_row(0),
            s2t_row(1, known=False),
            s2t_row(2, status="quarantined", known=False),
            s2t_row(3),
            s2t_row(4),
        ]
    )
    # known in both: 0 only (1 is not known spoken, 2 has no spoken prompt, 3 not known written, 4 not written)
    assert [a["known_id"] for a, _ in shared_prompts(t2t, s2t, require_known=True)] == [0]
    # every valid prompt: the quarantined S→T row (2) and the S→T-only record (4) are still left out
    pairs = shared_prompts(t2t, s2t, require_known=False)
    assert [(a["known_id"], b["known_id"]) for a, b in pairs] == [(3, 3), (0, 0), (1, 1)]


def test_states_equal_output_hidden_states_at_hand_computed_positions(lm, spec):
    t2t = {"known_id": 7, "prompt": "Apple was founded by", "subject": "Apple"}
    got = matched_states(lm.model, lm.tokenizer, spec, [(t2t, s2t_row(7))])
    # [Text]Apple was founded by → <s> ▁ [Text] A p p l e ▁was ▁founded ▁by: subject "Apple" is tokens 3..7
    t_ids = [1, 29871] + lm.tokenizer("[Text]Apple was founded by")["input_ids"][1:]
    assert lm.tokenizer.convert_ids_to_tokens(t_ids) == [
        "<s>",
        "▁",
        "[Text]",
        "A",
        "p",
        "p",
        "l",
        "e",
        "▁was",
        "▁founded",
        "▁by",
    ]
    pos = got.positions.iloc[0].to_dict()
    assert pos == {
        "known_id": 7,
        "t2t_subject": 7,
        "t2t_last": 10,
        "n_t2t": 11,
        "s2t_subject": 5,
        "s2t_last": 7,
        "n_s2t": 8,
    }
    assert got.known_ids == [7] and got.skipped == []
    n_layers, hidden = lm.model.config.num_hidden_layers, lm.model.config.hidden_size
    norm = lm.model.model.norm
    for ids, states, positions in ((t_ids, got.text, (7, 10)), (S2T_IDS, got.speech, (5, 7))):
        with torch.no_grad():
            hs = lm.model(torch.tensor([ids]), output_hidden_states=True).hidden_states
        assert len(hs) == n_layers + 1
        for p_name, p in zip(POSITIONS, positions, strict=True):
            x = states[p_name]
            assert x.shape == (1, n_layers, hidden) and x.dtype == np.float32
            # layer l = output of block l = hidden_states[l + 1] ...
            for layer in range(n_layers - 1):
                np.testing.assert_allclose(x[0, layer], hs[layer + 1][0, p].numpy(), rtol=0, atol=1e-6)
            # ... except the last block, whose hidden_states entry is after the final norm
            with torch.no_grad():
                np.testing.assert_allclose(
                    norm(torch.from_numpy(x[0, -1])).numpy(), hs[-1][0, p].numpy(), rtol=0, atol=1e-5
                )
            assert not np.allclose(x[0, -1], hs[-1][0, p].numpy(), atol=1e-3)
    # block_states alone, on the hand-written S→T ids, gives the same rows
    np.testing.assert_array_equal(block_states(lm.model, S2T_IDS, [5])[0], got.speech["subject"][0])


def test_prompt_without_a_span_is_skipped_with_its_reason(lm, spec):
    pairs = [
        ({"known_id": 1, "prompt": "Apple was founded by", "subject": "Apple"}, s2t_row(1)),
        ({"known_id": 2, "prompt": "Apple was founded by", "subject": "Rome"}, s2t_row(2)),  # not in the text
        ({"known_id": 3, "prompt": "Apple was founded by", "subject": "Apple"}, {**s2t_row(3), "pos_end": 7}),
    ]
    got = matched_states(lm.model, lm.tokenizer, spec, pairs)
    assert got.known_ids == [1] and list(got.positions["known_id"]) == [1]
    assert [k for k, _ in got.skipped] == [2, 3]
    assert "does not occur" in got.skipped[0][1] and "differs from the known table" in got.skipped[1][1]
    assert all(got.text[p].shape[0] == 1 and got.speech[p].shape[0] == 1 for p in POSITIONS)
    empty = matched_states(lm.model, lm.tokenizer, spec, [])
    assert empty.known_ids == [] and empty.text["last"].shape == (
        0,
        lm.model.config.num_hidden_layers,
        lm.model.config.hidden_size,
    )
