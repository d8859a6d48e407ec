"""Span mapping seconds → 25 Hz frames → deduplicated units → LM positions, on hand-built cases."""

from __future__ import annotations

import pytest

from crosstrace.models.spiritlm import s2t_ids
from crosstrace.spans import SpanError
from crosstrace.speech.units import (
    FrameGrid,
    UnitSpanError,
    dedup_units,
    frames_to_dedup_positions,
    seconds_to_frames,
    token_unit_ranges,
    unit_offset,
)

# frames:      0  1  2  3  4  5  6  7  8  9
FRAMES = [5, 5, 7, 7, 7, 5, 9, 9, 9, 9]
DEDUP, RUNS = [5, 7, 5, 9], [2, 3, 1, 4]  # runs: frames [0,2) [2,5) [5,6) [6,10)


def test_dedup_keeps_first_of_each_run():
    assert dedup_units([5, 5, 7, 7, 7, 5]) == ([5, 7, 5], [2, 3, 1])
    assert dedup_units(FRAMES) == (DEDUP, RUNS)
    assert dedup_units([]) == ([], [])
    assert dedup_units([3]) == ([3], [1])


def test_seconds_to_frames_eq2():
    assert seconds_to_frames(0.0, 0.04, 10) == (0, 1)
    assert seconds_to_frames(0.05, 0.09, 10) == (1, 3)  # floor(1.25)=1, ceil(2.25)=3
    assert seconds_to_frames(0.08, 0.12, 10) == (2, 3)  # exact frame edges
    assert seconds_to_frames(0.28, 0.4, 100) == (7, 10)  # 0.28*25 = 7.000000000000001 and 0.4*25 are exact after rounding
    assert seconds_to_frames(-0.1, 99.0, 10) == (0, 10)  # clipped to the utterance
    assert seconds_to_frames(0.3, 0.5, 30, rate=50) == (15, 25)


@pytest.mark.parametrize(
    "frames,expected",
    [
        ((0, 1), (0, 1)),  # span at utterance start, inside the first run
        ((0, 2), (0, 1)),  # exactly the first run
        ((1, 3), (0, 2)),  # both edge runs only partly covered: both count
        ((2, 5), (1, 2)),  # exactly one run
        ((3, 4), (1, 2)),  # one frame in the middle of a run -> one unit
        ((4, 7), (1, 4)),  # edge runs partly covered plus the one-frame run
        ((5, 6), (2, 3)),  # the one-frame run alone
        ((9, 10), (3, 4)),  # span at utterance end
        ((0, 10), (0, 4)),  # everything
    ],
)
def test_frames_to_dedup_positions(frames, expected):
    assert frames_to_dedup_positions(*frames, RUNS) == expected


def test_frames_out_of_range():
    with pytest.raises(UnitSpanError):
        frames_to_dedup_positions(3, 3, RUNS)
    with pytest.raises(UnitSpanError):
        frames_to_dedup_positions(0, 11, RUNS)


def test_one_span_end_to_end():
    """A time span → eq. 2 frames → deduplicated units → LM positions, through the functions the S→T prompt
    table uses (token_unit_ranges for the units, unit_offset on the real ids for the LM positions)."""
    ids = s2t_ids(DEDUP, stray_space=False)
    assert ids == [1, 32001, 32007, 32009, 32007, 32011, 32000]
    assert unit_offset(ids) == 2
    assert seconds_to_frames(0.05, 0.09, sum(RUNS)) == (1, 3)  # floor(1.25), ceil(2.25)
    tu = token_unit_ranges([0.05], [0.09], RUNS)  # frames [1, 3) -> runs 0, 1
    assert (tu.unit_start, tu.unit_end, tu.lead, tu.trail) == ([0], [2], 0, 2)
    off = unit_offset(ids)
    assert ids[off + tu.unit_start[0] : off + tu.unit_end[0]] == [32007, 32009]
    # span at the utterance end (t_end past the audio is clipped); [Text] stays outside
    tu = token_unit_ranges([0.36], [0.5], RUNS)
    assert (off + tu.unit_start[0], off + tu.unit_end[0]) == (5, 6)
    # span covering one unit (a frame inside the long run)
    assert token_unit_ranges([0.3], [0.31], RUNS).unit_start == [3]
    # the offset is read from the ids: the reference's stray "▁" (the default) shifts everything by one
    ids3 = s2t_ids(DEDUP)
    assert ids3[:3] == [1, 29871, 32001] and unit_offset(ids3) == 3
    # text before the speech: the offset counts it
    assert unit_offset([1, 32000, 450, 451, 32001] + [32002 + u for u in DEDUP] + [32000]) == 5


def test_zero_unit_span_errors():
    with pytest.raises(UnitSpanError, match="zero frames"):
        seconds_to_frames(0.5, 0.6, sum(RUNS))  # after the utterance (10 frames = 0.4 s)
    with pytest.raises(UnitSpanError, match="empty time span"):
        seconds_to_frames(0.2, 0.2, sum(RUNS))
    with pytest.raises(UnitSpanError, match="no speech-unit token"):
        unit_offset([1, 32000, 450])
    with pytest.raises(UnitSpanError, match="past the end of the audio"):
        token_unit_ranges([0.5], [0.6], RUNS)
    assert issubclass(UnitSpanError, SpanError)  # callers catch one error type for all span problems


def test_eq2_across_hubert_chunks():
    """Frames restart at every 100 s chunk (SpiritLM encodes each piece alone): a time maps to the frames of
    its own chunk. Here 100 s chunks of 2499 frames each (the last 0.04 s of a chunk has no frame)."""
    grid = FrameGrid.hubert([2499, 2499, 40])
    assert grid.chunk_seconds == 100.0 and grid.n_frames == 5038
    # one chunk: identical to eq. 2 on the frame count
    assert seconds_to_frames(0.05, 0.09, FrameGrid.hubert([10])) == seconds_to_frames(0.05, 0.09, 10) == (1, 3)
    assert seconds_to_frames(99.9, 100.1, grid) == (2497, 2499 + 3)  # floor(2497.5); chunk 1 frame ceil(2.5)
    assert seconds_to_frames(200.0, 200.04, grid) == (4998, 4999)
    assert seconds_to_frames(201.0, 205.0, grid) == (4998 + 25, 4998 + 40)  # clipped to the last chunk
    with pytest.raises(UnitSpanError, match="zero frames"):
        seconds_to_frames(99.99, 100.0, grid)  # inside the frames lost at the boundary
    # frame times: frame 2499 is the first of chunk 1, at 100 s (not at 2499/25 = 99.96 s)
    assert grid.frame_start_s(2498) == pytest.approx(99.92) and grid.frame_start_s(2499) == 100.0
    assert grid.frame_start_s(4998 + 3) == pytest.approx(200.12)
    with pytest.raises(UnitSpanError, match="do not add up"):
        FrameGrid.hubert([2499, 10], n_frames=2500)
