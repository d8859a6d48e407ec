"""Speech units: deduplication, and mapping a time span in seconds to LM token positions.

Pure functions (docs/spiritlm.md "From seconds to LM positions"; docs/method.md "S→T: text tokens and
units"; paper eq. 2):

1. seconds → 25 Hz frames: ``f_a = floor(t_start·rate)``, ``f_end = ceil(t_end·rate)`` (exclusive), clipped
   to ``[0, n_frames]``;
2. frames → deduplicated positions: ``[r(f_a), r(f_end − 1) + 1)`` where ``r(k)`` is the index of the run
   that holds frame k (a run crossing a span edge is one token and counts as inside);
3. deduplicated positions → LM positions: ``p = off + r``, with ``off`` the index of the first unit token
   (id in 32002..32502) in the real prompt ids.

Products ``t·rate`` are rounded to 1e-9 before floor/ceil so that float noise (0.28·25 = 7.000000000000001)
does not move an edge by a frame.
"""

from __future__ import annotations

import json
import logging
import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from crosstrace.models.hubert import dedup_units  # noqa: F401 (re-exported: units and run lengths)
from crosstrace.models.spiritlm import HU0_ID, N_HU
from crosstrace.spans import SpanError

FRAME_RATE = 25  # HuBERT 25 Hz frames (hop 640 samples at 16 kHz)


class UnitSpanError(SpanError):
    """A time span that maps to no speech unit (or lies outside the utterance)."""


class TokenUnitsError(UnitSpanError):
    """A text token that owns no speech unit; ``token`` is its index among the prompt's text tokens."""

    def __init__(self, message: str, token: int):
        super().__init__(message)
        self.token = token


@dataclass(frozen=True)
class UnitSpan:
    """One time span through every stage of the mapping; ``*_end`` bounds are exclusive."""

    t_start: float
    t_end: float
    frame_start: int
    frame_end: int
    dedup_start: int
    dedup_end: int
    offset: int  # LM position of the first unit token
    pos_start: int
    pos_end: int

    @property
    def positions(self) -> tuple[int, int]:
        return self.pos_start, self.pos_end


def _scaled(t: float, rate: float) -> float:
    return round(float(t) * rate, 9)


def seconds_to_frames(t_start: float, t_end: float, n_frames: int, rate: float = FRAME_RATE) -> tuple[int, int]:
    """Paper eq. 2: ``[floor(t_start·rate), ceil(t_end·rate))``, clipped to ``[0, n_frames]``."""
    if not (math.isfinite(t_start) and math.isfinite(t_end)):
        raise UnitSpanError(f"span times must be finite, got [{t_start}, {t_end})")
    if t_end <= t_start:
        raise UnitSpanError(f"empty time span [{t_start}, {t_end}) s")
    if n_frames <= 0:
        raise UnitSpanError(f"utterance has {n_frames} frames")
    f_a = max(0, min(n_frames, math.floor(_scaled(t_start, rate))))
    f_end = max(0, min(n_frames, math.ceil(_scaled(t_end, rate))))
    if f_end <= f_a:
        raise UnitSpanError(
            f"span [{t_start}, {t_end}) s maps to zero frames (frames [{f_a}, {f_end}) of {n_frames} at {rate} Hz): "
            "it lies outside the utterance"
        )
    return f_a, f_end


def chunked_seconds_to_frames(
    t_start: float, t_end: float, chunk_frames: Sequence[int], chunk_seconds: float = 100.0, rate: float = FRAME_RATE
) -> tuple[int, int]:
    """Eq. 2 for audio encoded in ``chunk_seconds`` pieces (frames restart at each chunk; docs/spiritlm.md).

    A time t in chunk c = floor(t / chunk_seconds) maps to ``Σ chunk_frames[:c]`` plus its frame inside the
    chunk, clipped to that chunk's frames (the frames lost at each boundary). Times past the last encoded
    chunk (for example a dropped short tail) clip to the end. With one chunk this is :func:`seconds_to_frames`.
    """
    if not chunk_frames or any(n <= 0 for n in chunk_frames):
        raise UnitSpanError(f"chunk frame counts must be positive, got {list(chunk_frames)}")
    if not (math.isfinite(t_start) and math.isfinite(t_end)):
        raise UnitSpanError(f"span times must be finite, got [{t_start}, {t_end})")
    if t_end <= t_start:
        raise UnitSpanError(f"empty time span [{t_start}, {t_end}) s")
    starts = [0, *accumulate(chunk_frames)]
    total = starts[-1]

    def frame(t: float, rnd) -> int:
        if t <= 0:
            return 0
        c = math.floor(_scaled(t, 1.0 / chunk_seconds))
        if c >= len(chunk_frames):
            return total
        local = rnd(_scaled(t - c * chunk_seconds, rate))
        return starts[c] + max(0, min(chunk_frames[c], local))

    f_a, f_end = frame(t_start, math.floor), frame(t_end, math.ceil)
    if f_end <= f_a:
        raise UnitSpanError(f"span [{t_start}, {t_end}) s maps to zero frames ([{f_a}, {f_end}) of {total})")
    return f_a, f_end


def frames_to_dedup_positions(f_a: int, f_end: int, run_lengths: Sequence[int]) -> tuple[int, int]:
    """Frames ``[f_a, f_end)`` → deduplicated positions ``[r(f_a), r(f_end − 1) + 1)``."""
    if any(r <= 0 for r in run_lengths):
        raise ValueError("run lengths must be positive")
    ends = list(accumulate(run_lengths))  # ends[i] = first frame after run i
    n = ends[-1] if ends else 0
    if not (0 <= f_a < f_end <= n):
        raise UnitSpanError(f"frames [{f_a}, {f_end}) are not a non-empty range inside the {n} frames of the units")
    r_a = bisect_right(ends, f_a)
    r_last = bisect_right(ends, f_end - 1)
    return r_a, r_last + 1


def unit_offset(ids: Sequence[int]) -> int:
    """Index of the first speech-unit token (id in 32002..32502) in a prompt."""
    for i, t in enumerate(ids):
        if HU0_ID <= int(t) < HU0_ID + N_HU:
            return i
    raise UnitSpanError("prompt ids contain no speech-unit token (ids 32002..32502)")


def unit_span_positions(
    t_start: float,
    t_end: float,
    run_lengths: Sequence[int],
    ids: Sequence[int],
    n_frames: int | None = None,
    rate: float = FRAME_RATE,
) -> UnitSpan:
    """Map a span in seconds to LM positions ``[pos_start, pos_end)`` in the prompt ``ids``.

    ``run_lengths`` are the run lengths of the utterance's frame units (one per deduplicated token);
    ``n_frames`` defaults to their sum. The unit tokens in ``ids`` must be one contiguous block of exactly
    ``len(run_lengths)`` tokens, which is checked.
    """
    total = sum(run_lengths)
    n = total if n_frames is None else n_frames
    if n != total:
        raise UnitSpanError(f"n_frames={n} but the run lengths cover {total} frames")
    off = unit_offset(ids)
    n_units = 0
    for t in ids[off:]:
        if HU0_ID <= int(t) < HU0_ID + N_HU:
            n_units += 1
        else:
            break
    if n_units != len(run_lengths):
        raise UnitSpanError(f"prompt has {n_units} consecutive unit tokens from position {off}, but {len(run_lengths)} runs")
    f_a, f_end = seconds_to_frames(t_start, t_end, n, rate)
    r_a, r_end = frames_to_dedup_positions(f_a, f_end, run_lengths)
    return UnitSpan(float(t_start), float(t_end), f_a, f_end, r_a, r_end, off, off + r_a, off + r_end)


# ------------------------------------------------------------------------ text tokens → units (whole prompt)


@dataclass(frozen=True)
class TokenUnits:
    """Which deduplicated units each text token of a spoken prompt owns (a partition; ``*_end`` exclusive).

    ``unit_start[k]``/``unit_end[k]``: token k's units as deduplicated positions (add the prompt's unit
    offset for LM positions). ``eq2_start``/``eq2_end``: the units token k touches by paper eq. 2 before
    boundary units are resolved (neighbours may share one). Units ``[0, lead)`` and ``[n_units − trail,
    n_units)`` lie before the first and after the last token (silence) and belong to no token.
    """

    unit_start: list[int]
    unit_end: list[int]
    eq2_start: list[int]
    eq2_end: list[int]
    lead: int
    trail: int
    n_units: int


def _frame_range(t_start: float, t_end: float, n_frames: int, rate: float) -> tuple[int, int]:
    """Eq. 2 without the error for an empty span: ``[floor(t_start·rate), ceil(t_end·rate))`` clipped."""
    f_a = max(0, min(n_frames, math.floor(_scaled(t_start, rate))))
    f_end = max(0, min(n_frames, math.ceil(_scaled(t_end, rate))))
    return f_a, max(f_a, f_end)


def token_unit_ranges(starts: Sequence[float], ends: Sequence[float], run_lengths: Sequence[int],
                      rate: float = FRAME_RATE, names: Sequence[str] | None = None) -> TokenUnits:
    """Partition the deduplicated units of an utterance among its text tokens (paper §2.4, App. A, eq. 2).

    ``starts``/``ends``: each text token's time range in seconds, in prompt order, contiguous
    (``ends[k] == starts[k+1]``; see :func:`crosstrace.speech.align.token_times`). ``run_lengths``: the run
    length of each deduplicated unit in 25 Hz frames, so unit j covers frames ``[F_j, F_{j+1})`` and the
    time ``[F_j/rate, F_{j+1}/rate)``.

    1. Eq. 2 gives token k the frames ``[floor(s_k·rate), ceil(e_k·rate))`` and through the run lengths
       the units holding them: exactly the units whose time overlaps ``[s_k, e_k)``.
    2. Neighbours can touch the same unit. The units are split into consecutive, non-empty blocks, one per
       token and inside its eq. 2 range, with the largest total time overlap between each token and its
       units: a shared unit goes to the token that overlaps it longest, unless that would leave a token
       with no unit at all (a short token inside long runs), in which case the split that costs the least
       overlap is taken. On an exact tie a shared unit stays with the earlier token. Every unit touched by
       a token thus belongs to exactly one; units touched by none lie before the first or after the last
       token (silence).

    Raises :class:`TokenUnitsError` naming the token (``names[k]``) when no such split exists (more tokens
    than units in a stretch) or a token lies past the end of the audio.
    """
    if len(starts) != len(ends) or not len(starts):
        raise ValueError("need one start and one end per text token, and at least one token")
    if any(r <= 0 for r in run_lengths) or not len(run_lengths):
        raise ValueError("run lengths must be positive, and there must be at least one unit")
    for k in range(len(starts)):
        if not (math.isfinite(starts[k]) and math.isfinite(ends[k])) or ends[k] < starts[k]:
            raise UnitSpanError(f"text token {k} has no valid time range [{starts[k]}, {ends[k]})")
        if k and abs(starts[k] - ends[k - 1]) > 1e-9:
            raise ValueError(f"text token time ranges must be contiguous: token {k} starts at {starts[k]}, "
                             f"token {k - 1} ends at {ends[k - 1]}")
    bounds = [0, *accumulate(run_lengths)]  # unit j covers frames [bounds[j], bounds[j+1])
    n_frames, n_units = bounds[-1], len(run_lengths)
    eq2 = []
    for s, e in zip(starts, ends, strict=True):
        f_a, f_end = _frame_range(s, e, n_frames, rate)
        if f_end > f_a:
            r_a, r_end = frames_to_dedup_positions(f_a, f_end, run_lengths)
        else:
            r_a = r_end = bisect_right(bounds, f_a) - 1 if f_a < n_frames else n_units
        eq2.append((r_a, r_end))
    m = len(starts)

    def name(k: int) -> str:
        return f"text token {k}{f' {names[k]!r}' if names is not None else ''} ([{starts[k]:.3f}, {ends[k]:.3f}) s)"

    for k, (r_a, r_end) in enumerate(eq2):
        if r_end <= r_a:
            why = "it lies past the end of the audio" if r_a >= n_units else "it has no duration"
            raise TokenUnitsError(f"{name(k)} owns no speech unit ({why})", k)

    def overlap(k: int, j: int) -> float:
        return max(0.0, min(ends[k], bounds[j + 1] / rate) - max(starts[k], bounds[j] / rate))

    # cum[k][j]: overlap of token k with units [0, j) (only units in its eq. 2 range count)
    cum = []
    for k, (r_a, r_end) in enumerate(eq2):
        row = [0.0] * (n_units + 1)
        for j in range(n_units):
            row[j + 1] = row[j] + (overlap(k, j) if r_a <= j < r_end else 0.0)
        cum.append(row)
    # Boundaries c_0 = eq2[0] start < c_1 < … < c_m = eq2[m-1] end; token k owns units [c_k, c_k+1), which must
    # lie inside its eq. 2 range. Maximise the total overlap (dynamic programme over boundaries; on a tie the
    # later boundary, i.e. a shared unit stays with the earlier token).
    neg = float("-inf")
    best = {eq2[0][0]: 0.0}
    back: list[dict[int, int]] = []
    for k in range(m):
        r_a, r_end = eq2[k]
        lo = eq2[k + 1][0] if k + 1 < m else r_end
        his = [r_end] if k + 1 == m else range(max(lo, r_a + 1), r_end + 1)
        nxt: dict[int, float] = {}
        arg: dict[int, int] = {}
        for c2 in his:
            top, where = neg, -1
            for c, v in best.items():
                if r_a <= c < c2:
                    score = v + cum[k][c2] - cum[k][c]
                    if score >= top - 1e-12 and (score > top + 1e-12 or c > where):
                        top, where = max(top, score), c
            if where >= 0:
                nxt[c2], arg[c2] = top, where
        if not nxt:
            raise TokenUnitsError(f"{name(k)} owns no speech unit (it shares all its units with neighbouring tokens "
                                  "that have no other unit)", k)
        best = nxt
        back.append(arg)
    bounds_k = [eq2[-1][1]]
    for k in range(m - 1, -1, -1):
        bounds_k.append(back[k][bounds_k[-1]])
    bounds_k.reverse()
    unit_start, unit_end = bounds_k[:-1], bounds_k[1:]
    lead = unit_start[0]
    trail = n_units - unit_end[-1]
    return TokenUnits(unit_start, unit_end, [a for a, _ in eq2], [b for _, b in eq2], lead, trail, n_units)


#: columns of ``{model}/s2t/units/{shard}.parquet`` (one row per speech prompt)
UNITS_COLUMNS = ["known_id", "units", "dedup", "run_lengths", "n_frames", "chunk_frames", "status", "reason"]


def units_row(known_id: int, units=None, error: str | None = None) -> dict:
    """A row of ``{model}/s2t/units/{shard}.parquet`` (``units``: a hubert.Units, or None with ``error``)."""
    if units is None:
        return {"known_id": known_id, "units": [], "dedup": [], "run_lengths": [], "n_frames": 0,
                "chunk_frames": "[]", "status": "quarantined", "reason": f"known_id={known_id}: {error}"}
    return {"known_id": known_id, "units": list(units.units), "dedup": list(units.dedup),
            "run_lengths": list(units.run_lengths), "n_frames": int(units.n_frames),
            "chunk_frames": json.dumps(list(units.chunk_frames)), "status": "ok", "reason": ""}


def encode_clip(tokenizer, clip) -> dict:
    """The units row of one manifest row (``known_id``, ``status``, ``reason``, ``path``) with a
    ``SpeechTokenizer``: a clip without audio, or one the tokenizer rejects, is a quarantined row."""
    kid = int(clip.known_id)
    if clip.status != "ok":
        return units_row(kid, error=f"no audio ({clip.reason})")
    try:
        return units_row(kid, tokenizer.encode_file(clip.path))
    except (RuntimeError, OSError, ValueError) as e:  # SpeechTokenizerError is a ValueError
        logging.getLogger("crosstrace").warning("known_id %d quarantined: %s", kid, e)
        return units_row(kid, error=f"{type(e).__name__}: {e}")
