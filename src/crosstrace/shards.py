"""How the records a stage works on are cut into shard jobs (trace and speech alike). Which prompts are
traced is :func:`crosstrace.filtering.select_for_trace`; which get speech, :func:`select_for_speech`.

A shard is a fixed block of known_ids: shard i holds ids ``[i * size, (i + 1) * size)`` of the
selection, in dataset order. The workflow passes each shard its ids as a rule parameter, so a shard
reruns only when its own ids change: raising a ``max_prompts`` cap adds shards after the last full one
and leaves finished shards alone. Pure pandas, no torch: the Snakemake process imports this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd


def select_for_speech(records: pd.DataFrame, max_prompts: int | None) -> pd.DataFrame:
    """The validated records that get a spoken version: the first ``max_prompts`` (None: all), in order."""
    return records if max_prompts is None else records.iloc[: int(max_prompts)]


def shard_blocks(known_ids: Iterable[int], shard_size: int) -> list[list[int]]:
    """The known_ids of each shard: consecutive blocks of ``shard_size``; the last may be shorter.

    No ids give one empty shard, so the stage after the shards still sees a (typed, empty) table.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    ids = [int(i) for i in known_ids]
    return [ids[i : i + shard_size] for i in range(0, len(ids), shard_size)] or [[]]


def select_known_ids(table: pd.DataFrame, known_ids: Sequence[int]) -> pd.DataFrame:
    """The rows of ``table`` with these known_ids, in the order given; a missing id is an error."""
    ids = [int(i) for i in known_ids]
    by_id = table.set_index(table["known_id"].astype(int), drop=False)
    missing = [i for i in ids if i not in by_id.index]
    if missing:
        raise KeyError(f"known_id {missing[:10]} not in the input table; its shard list is stale (rerun the workflow)")
    return by_id.loc[ids].reset_index(drop=True)
