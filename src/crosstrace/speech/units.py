"""Speech units and the mapping time → text tokens → LM positions: family-neutral, in four small steps.

Pure functions (docs/spiritlm.md "From seconds to LM positions"; docs/method.md "S→T: text tokens and
units"; paper eq. 2). Nothing here is specific to SpiritLM except the unit ids of :func:`unit_offset`: an
audio encoder is described by a :class:`FrameGrid` (its frame rate and the chunks it restarts at) and by the
run lengths that group its frames into LM positions (SpiritLM's deduplication; all ones for an encoder whose
every frame is one position).

1. seconds → frames (paper eq. 2, :meth:`FrameGrid.frame_range`, the one implementation):
   ``f_a = floor(t_start·rate)``, ``f_end = ceil(t_end·rate)`` (exclusive), inside the chunk that holds each
   time, clipped to that chunk's frames; frames restart at every chunk (HuBERT: 100 s pieces);
2. frames → positions: ``[r(f_a), r(f_end − 1) + 1)`` where ``r(k)`` is the index of the run that holds
   frame k (a run crossing a span edge is one token and counts as inside; :func:`frames_to_dedup_positions`);
3. text tokens → positions: :func:`token_unit_ranges` gives every text token its block of positions;
   positions no token's eq. 2 range reaches (silence, pauses) belong to none;
4. positions → LM positions: ``p = off + r``, with ``off`` the index of the first unit token
   (id in 32002..32502) in the real prompt ids (:func:`unit_offset`).

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

from crosstrace.models.hubert import (
    CHUNK_SAMPLES,
    SAMPLE_RATE,
    dedup_units,  # noqa: F401 (re-exported: units and run lengths)
)
from crosstrace.models.spiritlm import HU0_ID, N_HU
from crosstrace.spans import SpanError

FRAME_RATE = 25  # HuBERT 25 Hz frames (hop 640 samples at 16 kHz)
HUBERT_CHUNK_SECONDS = CHUNK_SAMPLES / SAMPLE_RATE  # 100 s: SpiritLM encodes audio in pieces of this length


class UnitSpanError(SpanError):
    """A time span that maps to no speech unit (or lies outside the utterance)."""


class TokenUnitsError(UnitSpanError):
    """A text token that owns no speech unit; ``token`` is its index among the prompt's text tokens."""

    def __init__(self, message: str, token: int):
        super().__init__(message)
        self.token = token


def _scaled(t: float, rate: float) -> float:
    return round(float(t) * rate, 9)


@dataclass(frozen=True)
class FrameGrid:
    """Where an audio encoder's frames lie in time.

    ``rate`` frames per second, counted from the start of each chunk of ``chunk_seconds`` (the encoder runs
    on each chunk alone, so frames restart there); chunk c has ``chunk_frames[c]`` frames, which may end
    before the chunk does (the frames lost at a boundary). One chunk of infinite length is the plain case.
    Frame f (counted over all chunks) of chunk c, ``i = f − Σ chunk_frames[:c]``, covers the seconds
    ``[c·chunk_seconds + i/rate, c·chunk_seconds + (i+1)/rate)``.
    """

    chunk_frames: tuple[int, ...]
    rate: float = FRAME_RATE
    chunk_seconds: float = math.inf

    def __post_init__(self):
        if not self.chunk_frames or any(int(n) <= 0 for n in self.chunk_frames):
            raise UnitSpanError(f"chunk frame counts must be positive, got {list(self.chunk_frames)}")
        if len(self.chunk_frames) > 1 and not math.isfinite(self.chunk_seconds):
            raise ValueError("several chunks need a finite chunk_seconds")

    @classmethod
    def single(cls, n_frames: int, rate: float = FRAME_RATE) -> FrameGrid:
        """An utterance encoded in one piece."""
        if n_frames <= 0:
            raise UnitSpanError(f"utterance has {n_frames} frames")
        return cls((int(n_frames),), rate)

    @classmethod
    def hubert(cls, chunk_frames: Sequence[int], n_frames: int | None = None) -> FrameGrid:
        """SpiritLM's HuBERT: 25 Hz frames restarting every 100 s. ``chunk_frames`` as the units table
        stores it (empty in tables written before it was recorded: one chunk of ``n_frames``)."""
        frames = tuple(int(n) for n in chunk_frames)
        if not frames:
            return cls.single(int(n_frames or 0))
        if n_frames is not None and sum(frames) != int(n_frames):
            raise UnitSpanError(f"chunk frames {list(frames)} do not add up to the {n_frames} frames")
        return cls(frames, FRAME_RATE, HUBERT_CHUNK_SECONDS)

    @property
    def n_frames(self) -> int:
        return sum(self.chunk_frames)

    def _chunk_start(self, c: int) -> int:
        return sum(self.chunk_frames[:c])

    def frame_at(self, t: float, rnd) -> int:
        """Frame boundary of time ``t`` (``rnd``: math.floor for a start, math.ceil for an end)."""
        c = 0 if not math.isfinite(self.chunk_seconds) else math.floor(_scaled(t, 1.0 / self.chunk_seconds))
        if c < 0:
            return 0
        if c >= len(self.chunk_frames):
            return self.n_frames
        since = t - c * self.chunk_seconds if c else t  # (0·inf is NaN: the one-chunk grid has no chunk length)
        local = rnd(_scaled(since, self.rate))
        return self._chunk_start(c) + max(0, min(self.chunk_frames[c], local))

    def frame_range(self, t_start: float, t_end: float) -> tuple[int, int]:
        """Paper eq. 2: frames ``[floor(t_start·rate), ceil(t_end·rate))`` inside their chunks, clipped to
        the encoded frames; possibly empty (``f_end == f_a``), never reversed."""
        f_a = self.frame_at(t_start, math.floor)
        return f_a, max(f_a, self.frame_at(t_end, math.ceil))

    def frame_start_s(self, f: int) -> float:
        """Seconds at which frame ``f`` starts."""
        c, first = 0, 0
        while c + 1 < len(self.chunk_frames) and f >= first + self.chunk_frames[c]:
            first += self.chunk_frames[c]
            c += 1
        return (c * self.chunk_seconds if c else 0.0) + (f - first) / self.rate


def seconds_to_frames(t_start: float, t_end: float, n_frames: int | FrameGrid,
                      rate: float = FRAME_RATE) -> tuple[int, int]:
    """Paper eq. 2 on an utterance of ``n_frames`` frames at ``rate`` (or on a :class:`FrameGrid`, e.g.
    audio encoded in 100 s chunks), refusing spans that are not finite, empty, or outside the frames."""
    if not (math.isfinite(t_start) and math.isfinite(t_end)):
        raise UnitSpanError(f"span times must be finite, got [{t_start}, {t_end})")
    if t_end <= t_start:
        raise UnitSpanError(f"empty time span [{t_start}, {t_end}) s")
    grid = n_frames if isinstance(n_frames, FrameGrid) else FrameGrid.single(n_frames, rate)
    f_a, f_end = grid.frame_range(t_start, t_end)
    if f_end <= f_a:
        raise UnitSpanError(
            f"span [{t_start}, {t_end}) s maps to zero frames (frames [{f_a}, {f_end}) of {grid.n_frames} at "
            f"{grid.rate} Hz): it lies outside the utterance (or in the frames lost at a chunk boundary)"
        )
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


# ------------------------------------------------------------------------ text tokens → units (whole prompt)


@dataclass(frozen=True)
class TokenUnits:
    """Which deduplicated units each text token of a spoken prompt owns (``*_end`` exclusive).

    ``unit_start[k]``/``unit_end[k]``: token k's units as deduplicated positions (add the prompt's unit
    offset for LM positions); blocks are in order and never overlap. ``eq2_start``/``eq2_end``: the units
    token k touches by paper eq. 2 before boundary units are resolved (neighbours may share one). Units
    ``[0, lead)`` and ``[n_units − trail, n_units)`` lie before the first and after the last token (silence);
    ``pause`` units lie between two tokens' blocks (pauses between words). All three belong to no token.
    """

    unit_start: list[int]
    unit_end: list[int]
    eq2_start: list[int]
    eq2_end: list[int]
    lead: int
    trail: int
    n_units: int
    pause: int = 0


def token_unit_ranges(starts: Sequence[float], ends: Sequence[float], run_lengths: Sequence[int],
                      rate: float = FRAME_RATE, names: Sequence[str] | None = None,
                      grid: FrameGrid | None = None) -> TokenUnits:
    """Give every text token of an utterance its block of positions (paper §2.4, App. A, eq. 2).

    ``starts``/``ends``: each text token's time range in seconds, in order and not overlapping
    (``starts[k+1] >= ends[k]``; a gap between them is a pause; see
    :func:`crosstrace.speech.align.token_times`). ``run_lengths``: how many frames each position holds
    (SpiritLM: the deduplication runs), so position j covers frames ``[F_j, F_{j+1})``. ``grid``: where the
    frames lie in time (default: one chunk of ``sum(run_lengths)`` frames at ``rate``; for audio encoded in
    chunks, e.g. over 100 s with HuBERT, :meth:`FrameGrid.hubert`).

    1. Eq. 2 gives token k the frames ``[floor(s_k·rate), ceil(e_k·rate))`` and through the run lengths the
       positions holding them: exactly the positions whose time overlaps ``[s_k, e_k)``.
    2. Neighbours can touch the same position. Each token gets one contiguous, non-empty block inside its
       eq. 2 range, blocks in order and disjoint, with the largest total time overlap between each token
       and its block: a shared position goes to the token that overlaps it longest, unless that would leave
       a token with no position at all (a short token inside long runs), in which case the split that costs
       the least overlap is taken. On an exact tie a shared position stays with the earlier token. So every
       position touched by a token belongs to exactly one; positions touched by none (silence before the
       first and after the last token, and pauses between tokens whose time ranges leave a gap longer than
       a frame) belong to no token.

    Raises :class:`TokenUnitsError` naming the token (``names[k]``) when no such split exists (more tokens
    than positions in a stretch) or a token lies past the end of the audio.
    """
    if len(starts) != len(ends) or not len(starts):
        raise ValueError("need one start and one end per text token, and at least one token")
    if any(r <= 0 for r in run_lengths) or not len(run_lengths):
        raise ValueError("run lengths must be positive, and there must be at least one unit")
    for k in range(len(starts)):
        if not (math.isfinite(starts[k]) and math.isfinite(ends[k])) or ends[k] < starts[k]:
            raise UnitSpanError(f"text token {k} has no valid time range [{starts[k]}, {ends[k]})")
        if k and starts[k] < ends[k - 1] - 1e-9:
            raise ValueError(f"text token time ranges must not overlap: token {k} starts at {starts[k]}, "
                             f"token {k - 1} ends at {ends[k - 1]}")
    bounds = [0, *accumulate(run_lengths)]  # unit j covers frames [bounds[j], bounds[j+1])
    n_frames, n_units = bounds[-1], len(run_lengths)
    grid = grid or FrameGrid.single(n_frames, rate)
    if grid.n_frames != n_frames:
        raise UnitSpanError(f"the run lengths cover {n_frames} frames, the frame grid {grid.n_frames}")
    t0 = [grid.frame_start_s(bounds[j]) for j in range(n_units)]
    t1 = [grid.frame_start_s(bounds[j + 1] - 1) + 1.0 / grid.rate for j in range(n_units)]
    eq2 = []
    for s, e in zip(starts, ends, strict=True):
        f_a, f_end = grid.frame_range(s, e)
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
        return max(0.0, min(ends[k], t1[j]) - max(starts[k], t0[j]))

    # cum[k][j]: overlap of token k with units [0, j) (only units in its eq. 2 range count)
    cum = []
    for k, (r_a, r_end) in enumerate(eq2):
        row = [0.0] * (n_units + 1)
        for j in range(n_units):
            row[j + 1] = row[j] + (overlap(k, j) if r_a <= j < r_end else 0.0)
        cum.append(row)
    # Dynamic programme over the end b_k of each token's block: token k owns [max(b_{k-1}, eq2 start), b_k)
    # (starting as early as allowed never loses overlap). Maximise the total overlap; on a tie prefer the
    # later b_{k-1}, i.e. a shared unit stays with the earlier token. The last token ends at its eq. 2 end.
    neg = float("-inf")
    best = {eq2[0][0]: 0.0}  # end of the block before token 0 -> best score so far
    back: list[dict[int, int]] = []
    for k in range(m):
        r_a, r_end = eq2[k]
        ends_k = [r_end] if k + 1 == m else range(r_a + 1, r_end + 1)
        nxt: dict[int, float] = {}
        arg: dict[int, int] = {}
        for b in ends_k:
            top, where = neg, -1
            for prev, v in best.items():
                a = max(prev, r_a)
                if a < b:
                    score = v + cum[k][b] - cum[k][a]
                    if score >= top - 1e-12 and (score > top + 1e-12 or prev > where):
                        top, where = max(top, score), prev
            if where >= 0:
                nxt[b], arg[b] = top, where
        if not nxt:
            raise TokenUnitsError(f"{name(k)} owns no speech unit (it shares all its units with neighbouring tokens "
                                  "that have no other unit)", k)
        best = nxt
        back.append(arg)
    unit_end = [eq2[-1][1]]
    for k in range(m - 1, 0, -1):
        unit_end.append(back[k][unit_end[-1]])
    unit_end.reverse()
    unit_start = [eq2[0][0]] + [max(b, eq2[k + 1][0]) for k, b in enumerate(unit_end[:-1])]
    lead = unit_start[0]
    trail = n_units - unit_end[-1]
    pause = sum(max(0, a - b) for a, b in zip(unit_start[1:], unit_end[:-1], strict=True))
    return TokenUnits(unit_start, unit_end, [a for a, _ in eq2], [b for _, b in eq2], lead, trail, n_units, pause)


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
