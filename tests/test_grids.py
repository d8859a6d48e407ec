"""The long IE table ↔ per-prompt grid conversion (crosstrace.grids), and the exact-shard reader of the AtP
validation going through the workflow's checked merge."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crosstrace.grids import grid_frame, ie_grid


def test_grid_frame_and_ie_grid_are_inverse():
    ie = np.arange(6.0).reshape(3, 2)  # 3 positions × 2 layers
    pr = ie + 0.5
    rows = grid_frame({"ie": ie, "p_restored": pr}, ["a", "b", "c"], pos_start=[0, 2, 5])
    assert rows["token_index"].tolist() == [0, 0, 1, 1, 2, 2] and rows["layer"].tolist() == [0, 1] * 3
    assert rows["token"].tolist() == ["a", "a", "b", "b", "c", "c"] and rows["pos_start"].tolist() == [0, 0, 2, 2, 5, 5]
    assert rows["ie"].tolist() == [0, 1, 2, 3, 4, 5]
    rows["n_tokens"] = 3
    np.testing.assert_array_equal(ie_grid(rows), ie)
    np.testing.assert_array_equal(ie_grid(rows.sample(frac=1, random_state=0), "p_restored"), pr)  # any row order


def test_ie_grid_fills_absent_cells():
    rows = pd.DataFrame({"token_index": [0, 2], "layer": [1, 0], "ie": [0.25, -0.5], "n_tokens": 4})
    grid = ie_grid(rows)
    assert grid.shape == (4, 2) and grid[0, 1] == 0.25 and grid[2, 0] == -0.5
    assert np.isnan(grid).sum() == 6
    assert (ie_grid(rows, fill=0.0) == np.nan_to_num(grid)).all()


def test_read_exact_refuses_overlapping_shards(tmp_path):
    from crosstrace.approximation import read_exact
    from crosstrace.trace.tables import QUARANTINE_COLUMNS, ShardError

    shards = tmp_path / "shards"
    shards.mkdir()
    rows = pd.DataFrame({"model": "m", "modality": "t2t", "known_id": [3, 3], "kind": "hidden", "token_index": [0, 1],
                         "layer": 0, "ie": [0.1, 0.2], "answer_mode": "top1"})
    for i in (0, 1):
        rows.to_parquet(shards / f"{i}.parquet")
        pd.DataFrame(columns=QUARANTINE_COLUMNS).to_parquet(shards / f"{i}.quarantine.parquet")
    with pytest.raises(ShardError, match=r"known_id \[3\] appear in more than one shard"):
        read_exact(tmp_path)
    (shards / "1.parquet").unlink()
    assert read_exact(tmp_path)["ie"].tolist() == [0.1, 0.2]
    (shards / "0.parquet").write_bytes(b"truncated")
    with pytest.raises(ShardError, match="unreadable"):
        read_exact(tmp_path)
