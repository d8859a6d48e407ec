"""Per-record steps with quarantine: a bad prompt becomes a row with ``status="quarantined"`` and a
``reason`` naming its known_id and the problem; it never stops the shard.

Table schemas (one parquet per shard, written by ``scripts/speech_*.py``):

* manifest: known_id, path, duration_s, sample_rate, backend, voice, status, reason,
  word_timings (JSON list of ``[word, start_s, end_s, exact]`` or null). With ``speech.source:
  recordings`` (:mod:`.recordings`): backend ``recordings``, voice = the source file as the user's
  manifest names it, word_timings null.
* qc: known_id, transcript, wer, passes_qc, reason
* alignment: known_id, aligner, subject_start_s, subject_end_s, words (JSON list of
  ``[word, start_s, end_s, score]``), score, status, reason, prompt_words (JSON list, one per
  whitespace-separated word of the prompt: ``[word, char_start, char_end, start_s, end_s, spoken,
  [[char, t_s], ...]]``, times null when unplaced; see :func:`prompt_words_to_json`), spoken_words (the same
  for the words of the prompt's spoken text, character offsets into it), spoken_subject (JSON
  ``[char_start, char_end]`` of the subject in the spoken text)
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..audio import read_wav, resample_to_16k, write_wav16
from .align import Alignment, PromptWord, WordSegment, quarantined, tts_alignment, whisper_alignment
from .asr import Transcript
from .tts import TTSBackend, WordTiming

log = logging.getLogger(__name__)

OK, QUARANTINED = "ok", "quarantined"
# A sample at or above FULL_SCALE (absolute) counts as clipped; a clip with more than MAX_CLIPPED of its
# samples clipped is quarantined.
FULL_SCALE, MAX_CLIPPED = 0.999, 0.01


@dataclass
class SynthResult:
    known_id: int | str
    path: str
    duration_s: float
    sample_rate: int
    backend: str
    voice: str
    status: str
    reason: str
    word_timings: str | None  # JSON

    def timings(self) -> list[WordTiming] | None:
        return timings_from_json(self.word_timings)


@dataclass
class QCResult:
    known_id: int | str
    transcript: str
    wer: float
    passes_qc: bool
    reason: str
    words: str | None = None  # JSON list of Whisper words [word, start_s, end_s, prob], reused by the whisper aligner


def timings_to_json(timings: list[WordTiming] | None) -> str | None:
    if timings is None:
        return None
    return json.dumps([[t.word, round(t.start_s, 6), round(t.end_s, 6), t.exact] for t in timings])


def timings_from_json(s: str | None) -> list[WordTiming] | None:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return None
    return [WordTiming(w, float(a), float(b), bool(x)) for w, a, b, x in json.loads(s)]


def words_to_json(words: list[WordSegment]) -> str:
    return json.dumps([[w.word, round(w.start_s, 6), round(w.end_s, 6), round(w.score, 6)] for w in words])


def _num(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None


def prompt_words_to_json(words: list[PromptWord]) -> str:
    return json.dumps([[w.word, w.char_start, w.char_end, _num(w.start_s), _num(w.end_s), w.spoken,
                        [[c, round(t, 6)] for c, t in w.anchors]] for w in words], ensure_ascii=False)


def prompt_words_from_json(s: str | None) -> list[PromptWord]:
    if s is None or (isinstance(s, float) and math.isnan(s)) or not s:
        return []
    nan = math.nan
    return [PromptWord(w, int(a), int(b), nan if s0 is None else float(s0), nan if s1 is None else float(s1),
                       bool(sp), tuple((int(c), float(t)) for c, t in anc))
            for w, a, b, s0, s1, sp, anc in json.loads(s)]


def audio_problem(audio: np.ndarray, sr: int, min_duration_s: float = 0.1, min_rms: float = 1e-4) -> str | None:
    """Why the audio is unusable (too short, silent, not finite), or None if it is fine."""
    x = np.asarray(audio, dtype=np.float64)
    if x.size == 0:
        return "empty audio"
    if not np.all(np.isfinite(x)):
        return "audio has non-finite samples"
    dur = x.size / sr
    if dur < min_duration_s:
        return f"audio too short ({dur:.3f} s < {min_duration_s} s)"
    rms = float(np.sqrt(np.mean(x**2)))
    if rms < min_rms:
        return f"silent audio (RMS {rms:.2e} < {min_rms:.0e})"
    clipped = clipped_fraction(x)
    if clipped > MAX_CLIPPED:
        return f"clipped audio ({100 * clipped:.1f}% of samples at full scale)"
    return None


def clipped_fraction(audio: np.ndarray) -> float:
    """Fraction of samples at full scale (|x| >= FULL_SCALE)."""
    return float(np.mean(np.abs(np.asarray(audio)) >= FULL_SCALE))


def synthesize_record(backend: TTSBackend, known_id, prompt: str, wav_path: str | Path,
                      min_duration_s: float = 0.1, min_rms: float = 1e-4) -> SynthResult:
    """Synthesise one prompt to a 16 kHz 16-bit WAV; quarantine empty text, TTS failures, bad audio."""
    def bad(problem: str, duration: float = math.nan) -> SynthResult:
        log.warning("known_id=%s quarantined: %s", known_id, problem)
        return SynthResult(known_id, "", duration, 16000, backend.name, backend.voice, QUARANTINED,
                           f"known_id={known_id}: {problem}", None)

    if not isinstance(prompt, str) or not prompt.strip():
        return bad("empty prompt text")
    try:
        syn = backend.synthesize(prompt)
    except Exception as e:  # noqa: BLE001 - any synthesiser failure quarantines this prompt only
        return bad(f"TTS failed: {type(e).__name__}: {e}")
    problem = audio_problem(syn.audio, syn.sample_rate, min_duration_s, min_rms)
    if problem:
        return bad(problem, syn.duration_s)
    write_wav16(wav_path, syn.audio, syn.sample_rate)
    return SynthResult(known_id, str(wav_path), syn.duration_s, syn.sample_rate, syn.backend, syn.voice, OK, "",
                       timings_to_json(syn.word_timings))


def load_audio16k(path: str | Path) -> np.ndarray:
    audio, sr = read_wav(path)
    return resample_to_16k(audio, sr)


def try_load_audio16k(path: str | Path) -> tuple[np.ndarray | None, str | None]:
    """(16 kHz audio, None), or (None, why) for a missing or unreadable file, so one bad WAV
    quarantines its prompt instead of failing the job."""
    try:
        return load_audio16k(path), None
    except Exception as e:  # noqa: BLE001 - soundfile raises several types for broken files
        return None, f"cannot read WAV {path}: {type(e).__name__}: {e}"


def qc_record(asr, known_id, prompt: str, audio16k: np.ndarray | None, max_wer: float,
              transcript: Transcript | None = None, audio_error: str | None = None) -> QCResult:
    """Transcribe (with word timestamps, unless ``transcript`` is given) and score one clip;
    ``passes_qc`` iff WER <= ``max_wer``. ``audio_error`` says why ``audio16k`` is missing."""
    from .asr import wer

    if audio16k is None:
        return QCResult(known_id, "", math.nan, False, f"known_id={known_id}: {audio_error or 'no audio'}")
    problem = audio_problem(audio16k, 16000)
    if problem:
        return QCResult(known_id, "", math.nan, False, f"known_id={known_id}: {problem}")
    try:
        tr = transcript if transcript is not None else asr.transcribe(audio16k, word_timestamps=True)
        w = wer(prompt, tr.text)
    except Exception as e:  # noqa: BLE001
        return QCResult(known_id, "", math.nan, False, f"known_id={known_id}: ASR failed: {type(e).__name__}: {e}")
    ok = w <= max_wer
    words = json.dumps([[a, round(b, 3), round(c, 3), round(d, 4)] for a, b, c, d in tr.words])
    return QCResult(known_id, tr.text, w, ok, "" if ok else f"known_id={known_id}: WER {w:.2f} > {max_wer}", words)


def transcript_from_qc(text: str, words_json: str | None) -> Transcript:
    words = [] if not words_json else [(w, float(a), float(b), float(p)) for w, a, b, p in json.loads(words_json)]
    return Transcript(text or "", words)


def no_audio_reason(manifest_row) -> str:
    """Why a manifest row has no audio, in its own words: the synthesiser's failure (``TTS failed: ...``,
    ``silent audio ...``) or the recordings loader's (``missing audio file ...``, ``no recording for this id
    in the manifest``, ...), without the row's ``known_id=N:`` prefix, which the caller adds again."""
    given = manifest_row.get("reason")
    reason = re.sub(r"^known_id=[^:]*: ", "", given.strip() if isinstance(given, str) else "")
    if not reason:
        reason = "the recording was rejected" if manifest_row.get("backend") == "recordings" else "the synthesiser made none"
    return f"no audio ({reason})"


def clip_audio(manifest_row) -> tuple[np.ndarray | None, str | None]:
    """The 16 kHz audio of a manifest row, or (None, why): the manifest's own reason for a quarantined row,
    or the read error of a file that is gone or broken."""
    if manifest_row["status"] != OK:
        return None, no_audio_reason(manifest_row)
    return try_load_audio16k(manifest_row["path"])


def qc_clip(asr, record, manifest_row, max_wer: float) -> QCResult:
    """QC of one shard record (``known_id``, ``prompt``) from its manifest row: a clip without audio (the
    synthesiser or the recordings loader quarantined it, or it cannot be read) is scored as missing audio,
    with the specific reason."""
    audio, err = clip_audio(manifest_row)
    return qc_record(asr, record.known_id, record.prompt, audio, max_wer, audio_error=err)


def align_record(aligner: str, known_id, prompt: str, subject: str, audio16k: np.ndarray | None, *,
                 ctc=None, asr=None, word_timings: list[WordTiming] | None = None,
                 transcript: Transcript | None = None, audio_error: str | None = None) -> Alignment:
    """Run one aligner (``ctc``, ``tts`` or ``whisper``) on one clip, quarantining instead of raising.

    ``ctc`` is a :class:`CTCAligner`; ``tts`` needs the synthesiser's ``word_timings``; ``whisper``
    uses ``transcript`` (e.g. from the QC table) or transcribes with ``asr``."""
    if audio16k is None:
        return quarantined(known_id, aligner, audio_error or "no audio")
    problem = audio_problem(audio16k, 16000)
    if problem:
        return quarantined(known_id, aligner, problem)
    try:
        if aligner == "ctc":
            return ctc.align(known_id, audio16k, prompt, subject)
        if aligner == "tts":
            segs = None if word_timings is None else [WordSegment(t.word, t.start_s, t.end_s, 1.0 if t.exact else 0.0)
                                                      for t in word_timings]
            return tts_alignment(known_id, prompt, subject, segs)
        if aligner == "whisper":
            tr = transcript if transcript is not None else asr.transcribe(audio16k, word_timestamps=True)
            return whisper_alignment(known_id, prompt, subject, tr.words)
    except Exception as e:  # noqa: BLE001
        return quarantined(known_id, aligner, f"{aligner} aligner failed: {type(e).__name__}: {e}")
    raise ValueError(f"unknown aligner {aligner!r}; choose ctc, tts or whisper")


def alignment_row(a: Alignment) -> dict:
    return {"known_id": a.known_id, "aligner": a.aligner, "subject_start_s": a.subject_start_s,
            "subject_end_s": a.subject_end_s, "words": words_to_json(a.words), "score": a.score,
            "status": a.status, "reason": a.reason, "prompt_words": prompt_words_to_json(a.prompt_words),
            "spoken_words": prompt_words_to_json(a.spoken_words), "spoken_subject": json.dumps(list(a.spoken_subject))}


#: columns of an alignment table (``alignment_row``)
def align_clip(aligners: Sequence[str], record, manifest_row, qc_row, ctc=None,
               spent: dict[str, float] | None = None) -> list[dict]:
    """Alignment rows of one shard record (``known_id``, ``prompt``, ``subject``), one per aligner, from its
    manifest row (audio, TTS word timings) and QC row (Whisper's words); ``spent`` accumulates seconds per
    aligner. Failures are quarantined rows (logged), never exceptions."""
    audio, err = clip_audio(manifest_row)
    words = qc_row["words"]
    # words is missing (None, or NaN in pandas' str columns) where QC had no audio to transcribe
    transcript = transcript_from_qc(qc_row["transcript"], words) if isinstance(words, str) and words else None
    rows = []
    for name in aligners:
        t0 = time.perf_counter()
        a = align_record(name, record.known_id, record.prompt, record.subject, audio, ctc=ctc,
                         word_timings=timings_from_json(manifest_row["word_timings"]), transcript=transcript,
                         audio_error=err)
        if spent is not None:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
        if a.status != "ok":
            log.warning("%s", a.reason)
        rows.append(alignment_row(a))
    return rows


ALIGNMENT_COLUMNS = ["known_id", "aligner", "subject_start_s", "subject_end_s", "words", "score", "status", "reason",
                     "prompt_words", "spoken_words", "spoken_subject"]


def row(obj) -> dict:
    return asdict(obj)
