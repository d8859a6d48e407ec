"""Your own recordings instead of synthesis (``speech.source: recordings``, rule ``load_recordings``).

A manifest CSV lists one recording per record: ``id`` (the record's id, ``known_id`` in the tables),
``path`` (any file soundfile reads: WAV, FLAC, OGG...; a relative path starts at the manifest's folder) and
optionally ``transcript`` (what the speaker said). Each recording becomes 16 kHz mono the way TTS output
does: channels averaged, then :func:`~crosstrace.audio.resample_to_16k`, written as a 16-bit WAV
into the run, so Whisper QC, alignment, units and S→T run on it unchanged.

Bad audio is a quarantined manifest row with the reason, never a failed job: no manifest row for the
record, missing file, unreadable file, clipped (in any channel, before mixing), silent, shorter than the
subject, or a manifest transcript that differs from the prompt by more than ``max_wer`` (a recording
filed under the wrong id). A malformed manifest (no ``id``/``path`` column, an id that is not a
non-negative integer, duplicate ids) is a :class:`~crosstrace.data.DataError` naming the line.

Recordings have no word timings, so the ``tts`` aligner cannot run on them; ``whisper`` (offline) and
``ctc`` (with ``speech.align.ctc_model``) can. The workflow's config check says so before anything runs.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import TARGET_SR, resample_to_16k, write_wav16
from ..data import DataError
from .pipeline import MAX_CLIPPED, OK, QUARANTINED, SynthResult, audio_problem, clipped_fraction

log = logging.getLogger(__name__)

BACKEND = "recordings"
MANIFEST_COLUMNS = ("id", "path")  # required; "transcript" is optional
_DIGITS = re.compile(r"\s*\d+\s*")


@dataclass(frozen=True)
class Recording:
    known_id: int
    path: Path  # resolved against the manifest's folder
    given: str  # the path as the manifest writes it
    transcript: str | None = None


def read_manifest(path: str | Path) -> dict[int, Recording]:
    """The manifest's recordings by id; a DataError naming the file (and line) if it is malformed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such recordings manifest")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in MANIFEST_COLUMNS if c not in header]
            if missing:
                raise DataError(f"{path}: recordings manifest needs columns {list(MANIFEST_COLUMNS)} (+ optional transcript); "
                                f"missing {missing}, header is {header}")
            reader.fieldnames = header
            out: dict[int, Recording] = {}
            for row in reader:
                line = reader.line_num
                if None in row or any(v is None for v in row.values()):
                    raise DataError(f"{path}, line {line}: {len(header)} fields expected")
                rid = row["id"]
                if not _DIGITS.fullmatch(rid):
                    raise DataError(f"{path}, line {line}: id {rid!r} is not a non-negative integer (the record's id)")
                kid = int(rid)
                if kid in out:
                    raise DataError(f"{path}, line {line}: duplicate id {kid}; one recording per record")
                given = row["path"].strip()
                target = Path(given)
                if given and not target.is_absolute():
                    target = path.parent / target
                transcript = (row.get("transcript") or "").strip() or None
                out[kid] = Recording(kid, target, given, transcript)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at offset {e.start})") from e
    return out


def load_recording(known_id: int, prompt: str, subject: str, rec: Recording | None, wav_path: str | Path, *,
                   max_wer: float, min_rms: float = 1e-3, max_chars_per_s: float = 30.0) -> SynthResult:
    """Check one recording and write it as a 16 kHz mono 16-bit WAV at ``wav_path``; a quarantined row
    (never an exception) for any problem."""
    from .asr import wer

    given = "" if rec is None else rec.given

    def bad(problem: str, duration: float = math.nan) -> SynthResult:
        log.warning("known_id=%s quarantined: %s", known_id, problem)
        return SynthResult(known_id, "", duration, TARGET_SR, BACKEND, given, QUARANTINED,
                           f"known_id={known_id}: {problem}", None)

    if rec is None:
        return bad("no recording for this id in the manifest")
    if rec.transcript is not None:
        w = wer(prompt, rec.transcript)
        if w > max_wer:
            return bad(f"manifest transcript {rec.transcript!r} differs from the prompt {prompt!r} "
                       f"(WER {w:.2f} > max_wer {max_wer})")
    if not given or not rec.path.is_file():
        return bad(f"missing audio file {str(rec.path) if given else '(empty path)'!s}")
    try:
        import soundfile as sf

        x, sr = sf.read(str(rec.path), dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - soundfile raises several types for broken files
        return bad(f"unreadable audio file {rec.path}: {type(e).__name__}: {e}")
    if x.size == 0:
        return bad(f"empty audio file {rec.path}")
    duration = x.shape[0] / sr
    # Clipping is judged per channel before mixing: averaging a clipped channel with a clean one hides it.
    clipped = [clipped_fraction(x[:, c]) for c in range(x.shape[1])]
    worst = int(np.argmax(clipped))
    if clipped[worst] > MAX_CLIPPED:
        where = f" in channel {worst + 1} of {x.shape[1]}" if x.shape[1] > 1 else ""
        return bad(f"clipped audio ({100 * clipped[worst]:.1f}% of samples at full scale{where})", duration)
    audio = resample_to_16k(x.mean(axis=1), sr)
    problem = audio_problem(audio, TARGET_SR, min_duration_s=0.0, min_rms=min_rms)
    if problem:
        return bad(problem, duration)
    letters = sum(c.isalnum() for c in subject)
    shortest = letters / max_chars_per_s
    if duration < shortest:
        return bad(f"recording is {duration:.2f} s, shorter than the subject {subject!r} takes to say "
                   f"({letters} letters at {max_chars_per_s:g} per second: {shortest:.2f} s)", duration)
    write_wav16(wav_path, audio, TARGET_SR)
    log.info("known_id=%s: %s, %d Hz, %d channel(s), %.2f s -> 16 kHz mono", known_id, rec.path, sr, x.shape[1], duration)
    return SynthResult(known_id, str(wav_path), len(audio) / TARGET_SR, TARGET_SR, BACKEND, given, OK, "", None)
