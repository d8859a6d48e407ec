"""Span mapping seconds → 25 Hz frames → deduplicated units → LM positions, on hand-built cases."""

from __future__ import annotations

import pytest

from crosstrace.models.spiritlm import s2t_ids
from crosstrace.spans import SpanError
from crosstrace.speech.units import (
    UnitSpanError,
    chunked_seconds_to_frames,
    dedup_units,
    frames_to_dedup_positions,
    seconds_to_frames,
    unit_offset,
    unit_span_positions,
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


def test_unit_span_positions_end_to_end():
    ids = s2t_ids(DEDUP, stray_space=False)
    assert ids == [1, 32001, 32007, 32009, 32007, 32011, 32000]
    assert unit_offset(ids) == 2
    sp = unit_span_positions(0.05, 0.09, RUNS, ids)  # frames [1, 3) -> runs 0, 1
    assert (sp.frame_start, sp.frame_end, sp.dedup_start, sp.dedup_end, sp.offset) == (1, 3, 0, 2, 2)
    assert sp.positions == (2, 4)
    assert ids[sp.pos_start : sp.pos_end] == [32007, 32009]
    # span at the utterance end (t_end past the audio is clipped); last token [Text] stays outside
    sp = unit_span_positions(0.36, 0.5, RUNS, ids)
    assert (sp.frame_start, sp.frame_end, sp.positions) == (9, 10, (5, 6))
    # span covering one unit (a frame inside the long run)
    assert unit_span_positions(0.3, 0.31, RUNS, ids).positions == (5, 6)
    # the offset is read from the ids: the reference's stray "▁" (the default) shifts everything by one
    ids3 = s2t_ids(DEDUP)
    assert ids3[:3] == [1, 29871, 32001]
    assert unit_span_positions(0.05, 0.09, RUNS, ids3).positions == (3, 5)
    # text before the speech: the offset counts it
    mixed = [1, 32000, 450, 451, 32001] + [32002 + u for u in DEDUP] + [32000]
    assert unit_span_positions(0.0, 0.4, RUNS, mixed).positions == (5, 9)


def test_zero_unit_span_errors():
    ids = s2t_ids(DEDUP)
    with pytest.raises(UnitSpanError, match="zero frames"):
        unit_span_positions(0.5, 0.6, RUNS, ids)  # after the utterance (10 frames = 0.4 s)
    with pytest.raises(UnitSpanError, match="empty time span"):
        unit_span_positions(0.2, 0.2, RUNS, ids)
    with pytest.raises(UnitSpanError, match="no speech-unit token"):
        unit_span_positions(0.0, 0.1, RUNS, [1, 32000, 450])
    with pytest.raises(UnitSpanError, match="3 runs|4 runs"):
        unit_span_positions(0.0, 0.1, RUNS[:3], ids)
    assert issubclass(UnitSpanError, SpanError)  # callers catch one error type for all span problems


def test_chunked_seconds_to_frames():
    # one chunk: identical to eq. 2
    assert chunked_seconds_to_frames(0.05, 0.09, [10]) == seconds_to_frames(0.05, 0.09, 10) == (1, 3)
    # 100 s chunks of 2499 frames each (one frame lost per boundary): frames restart at 100 s
    cf = [2499, 2499, 40]
    assert chunked_seconds_to_frames(99.9, 100.1, cf) == (2497, 2499 + 3)
    assert chunked_seconds_to_frames(200.0, 200.04, cf) == (4998, 4999)
    assert chunked_seconds_to_frames(201.0, 205.0, cf) == (4998 + 25, 4998 + 40)  # clipped to the last chunk
    with pytest.raises(UnitSpanError, match="zero frames"):
        chunked_seconds_to_frames(99.99, 100.0, cf)  # inside the frames lost at the boundary
