"""Issue 23 §4.8: a Known label decided by a near-tie. SmolLM2's Known 550 ("The original language of Chennai
600028 is a mixture of") continues " the English ..." or " the original ..." depending on float32 rounding:
the two tokens are 8.8e-8 logits apart, below float32's resolution at 12.6, so the batch shape, the thread
count or the CPU decided whether SmolLM2 knew 316 or 317 facts. known.parquet now records each label's
margin; a near-tie is decoded on its own, in float64 for a small model on the CPU, so no batch decides it.

Here the same situation is built on a tiny random Llama: two output rows made to differ by a few float32
ulps, so the model's greedy choice at the first step is a tie float32 cannot resolve."""

from __future__ import annotations

import math
import weakref

import pandas as pd
import pytest
import torch
from conftest import tiny_llama

from crosstrace.data import KnownRecord
from crosstrace.filtering import (
    FILTER_COLUMNS,
    NEAR_TIE,
    filter_known,
    greedy_alone,
    greedy_decode,
    tie_model,
)


class Words:
    """A word-level tokenizer over the tiny model's 64 ids ("w0" ... "w63"; id 63 is EOS and padding): the
    labels need text, and the test needs to know which id is which word."""

    eos_token_id = pad_token_id = 63

    def decode(self, ids, skip_special_tokens=False, clean_up_tokenization_spaces=False):
        return "".join(f" w{i}" for i in ids if not (skip_special_tokens and i == self.eos_token_id))


PROMPTS = [[5, 17, 33, 2], [9, 9, 40], [1, 2, 3, 4, 5, 6], [50, 12], [7, 30, 31, 8, 21]]


_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its float64 copy


def scores64(model, ids: list[int]) -> torch.Tensor:
    """The next-token logits of ``ids`` from a float64 copy of the model: the tie's true order."""
    m64 = _COPIES.get(model)
    if m64 is None:
        m64 = _COPIES[model] = tie_model(model)[0]
    with torch.no_grad():
        return m64(input_ids=torch.tensor([ids])).logits[0, -1]


def tied_model(prompt: list[int], nudge: float):
    """A tiny Llama whose second-best first token for ``prompt`` is made to tie with the best: its output row
    becomes the best one's, moved by ``nudge`` along the hidden dimension that matters most."""
    model = tiny_llama(layers=2, hidden=32, vocab=64, seed=3)
    s = scores64(model, prompt)
    _COPIES.clear()  # the weights change below
    a, b = s.topk(2).indices.tolist()
    with torch.no_grad():
        h = model.model.norm(model.model(input_ids=torch.tensor([prompt])).last_hidden_state)[0, -1]
        j = int(h.abs().argmax())
        w = model.lm_head.weight
        w[b] = w[a]
        w[b, j] += nudge * float(torch.sign(h[j]))  # a few float32 ulps of w: b now leads (nudge > 0) or trails
    return model, a, b


@pytest.mark.parametrize("nudge", [4e-8, -4e-8], ids=["b-leads", "a-leads"])
def test_a_tie_below_float32_resolution_is_decided_in_float64_whatever_the_batch(nudge):
    prompt = PROMPTS[0]
    model, a, b = tied_model(prompt, nudge)
    truth = scores64(model, prompt)
    gap = float(truth[b] - truth[a])
    assert 0 < abs(gap) < 1e-6 and (gap > 0) == (nudge > 0), "a genuine near-tie with a known winner"
    winner = b if gap > 0 else a
    records = [KnownRecord(i, "w", f"w{winner}" if i == 0 else "w0", "w x") for i in range(len(PROMPTS))]
    tables = []
    for batch, threads in ((1, 1), (2, 2), (5, 1), (5, 2)):
        torch.set_num_threads(threads)
        tables.append(filter_known(model, Words(), records, lambda r: PROMPTS[r.known_id], max_new_tokens=3,
                                   batch_size=batch, progress=False))
    torch.set_num_threads(2)
    for t in tables:
        assert list(t.columns) == FILTER_COLUMNS
        row = t.iloc[0]
        assert row["first_token_id"] == winner and row["label"] == "exact", "float64's order, in every batch"
        assert bool(row["near_tie"]) and row["decided"] == "float64"
        assert row["margin"] == pytest.approx(abs(gap), rel=1e-6), "the margin is the float64 gap of the tied step"
    labels = [t[["first_token_id", "continuation", "label"]] for t in tables]
    assert all(x.equals(labels[0]) for x in labels), "batch size and thread count change no label"


def test_margin_is_the_smallest_top2_gap_over_the_greedy_steps():
    """Hand check on prompts without a tie: each step's gap from plain float64 forward passes."""
    model = tiny_llama(layers=2, hidden=32, vocab=64, seed=3)
    decoded = greedy_decode(model, Words(), PROMPTS, max_new_tokens=4, batch_size=2, progress=False)
    for prompt, g in zip(PROMPTS, decoded, strict=True):
        ids, gaps = list(prompt), []
        for _ in range(4):
            s = scores64(model, ids)
            top = s.topk(2).values
            gaps.append(float(top[0] - top[1]))
            ids.append(int(s.argmax()))
        steps = len(g.ids) + (len(g.ids) < 4)  # the stop token's step counts too
        assert g.decided == "batch" and g.margin == pytest.approx(min(gaps[:steps]), abs=1e-4)
        assert g.margin > NEAR_TIE
        alone = greedy_alone(model, Words(), prompt, max_new_tokens=4)
        assert alone.ids == g.ids and alone.margin == pytest.approx(g.margin, abs=1e-4), "alone = batched, off ties"


def test_known_table_has_margin_columns():
    model = tiny_llama(layers=2, hidden=32, vocab=64, seed=3)
    records = [KnownRecord(i, "w", "w0", "w x") for i in range(len(PROMPTS))]
    t = filter_known(model, Words(), records, lambda r: PROMPTS[r.known_id], max_new_tokens=2, batch_size=4, progress=False)
    assert t["margin"].map(math.isfinite).all() and not t["near_tie"].any() and set(t["decided"]) == {"batch"}
    assert pd.api.types.is_float_dtype(t["margin"]) and pd.api.types.is_bool_dtype(t["near_tie"])
