"""Script-side I/O helpers: shard selection and reading shards back."""

from __future__ import annotations

import pandas as pd
import pytest

from crosstrace.io import read_parquets, select_shard, write_parquet


def test_select_shard_rows_in_file_order():
    df = pd.DataFrame({"known_id": [5, 3, 9, 1, 7]})
    assert select_shard(df, 0, 2)["known_id"].tolist() == [5, 3]
    assert select_shard(df, 2, 2)["known_id"].tolist() == [7]
    assert select_shard(df, 3, 2).empty
    with pytest.raises(ValueError, match="shard_size >= 1"):
        select_shard(df, 0, 0)


def test_read_parquets_concatenates_in_order(tmp_path):
    paths = [tmp_path / f"{i}.parquet" for i in range(2)]
    write_parquet(pd.DataFrame({"x": [1, 2]}), paths[0])
    write_parquet(pd.DataFrame({"x": [3]}), paths[1])
    assert read_parquets(paths)["x"].tolist() == [1, 2, 3]
    assert read_parquets([]).empty
