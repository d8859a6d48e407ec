"""The one shard selection used by trace and speech (crosstrace.shards): fixed blocks of the selected
known_ids in dataset order, so that raising a cap only adds shards."""

from __future__ import annotations

import pandas as pd
import pytest

from crosstrace.filtering import select_for_trace
from crosstrace.shards import select_for_speech, select_known_ids, shard_blocks


def test_shard_blocks_are_fixed_blocks_in_order():
    assert shard_blocks([5, 3, 9, 1, 7], 2) == [[5, 3], [9, 1], [7]]
    assert shard_blocks([], 2) == [[]], "no ids: one empty shard, so merge still gets a typed table"
    with pytest.raises(ValueError, match="shard_size must be >= 1"):
        shard_blocks([1], 0)


def test_raising_the_cap_keeps_every_full_shard():
    known = pd.DataFrame({"known_id": range(20), "known": [i % 3 != 1 for i in range(20)], "status": "ok"})
    small = shard_blocks(select_for_trace(known, 4, True)["known_id"], 2)
    large = shard_blocks(select_for_trace(known, 9, True)["known_id"], 2)
    assert small == [[0, 2], [3, 5]] and large[: len(small)] == small
    assert large == [[0, 2], [3, 5], [6, 8], [9, 11], [12]]


def test_select_for_trace_keeps_traceable_rows_in_dataset_order():
    known = pd.DataFrame({"known_id": [4, 1, 8, 2], "known": [True, False, True, True],
                          "status": ["ok", "ok", "quarantined", "ok"]})
    assert select_for_trace(known, None, True)["known_id"].tolist() == [4, 2]
    assert select_for_trace(known, None, False)["known_id"].tolist() == [4, 1, 2]
    assert select_for_trace(known, 1, False)["known_id"].tolist() == [4]


def test_select_for_speech_takes_the_first_records():
    records = pd.DataFrame({"known_id": [7, 3, 5]})
    assert select_for_speech(records, 2)["known_id"].tolist() == [7, 3]
    assert select_for_speech(records, None)["known_id"].tolist() == [7, 3, 5]


def test_select_known_ids_in_the_given_order():
    df = pd.DataFrame({"known_id": [5, 3, 9], "prompt": ["a", "b", "c"]})
    assert select_known_ids(df, [9, 5])["prompt"].tolist() == ["c", "a"]
    assert select_known_ids(df, []).empty and list(select_known_ids(df, []).columns) == ["known_id", "prompt"]
    with pytest.raises(KeyError, match=r"known_id \[4\] not in the input table"):
        select_known_ids(df, [3, 4])
