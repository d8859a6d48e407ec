"""Word and subject timing for synthetic prompts: CTC forced alignment, TTS timings, Whisper timestamps.

CTC forced alignment follows the paper (Appendix A): frame-level log-probabilities from a CTC model
(``Wav2Vec2ForCTC``/``HubertForCTC``), a trellis ``K`` over the transcript labels where each step either
stays on the current label (emitting blank or the label again) or advances to the next label, a
backtrack from the last label at the last frame, merging of the frames that share a label into one
segment with its mean probability, and grouping of label segments into words at the ``|`` boundary.
Frames become seconds with the paper's eq. 1 (:func:`frames_to_seconds`).

Every aligner also places in time each word of the prompt's *spoken text* (the paper's preprocessed
transcript, :attr:`crosstrace.speech.normalize.Normalized.spoken_text`; ``Alignment.spoken_words``) and each
whitespace-separated word of the prompt itself (``Alignment.prompt_words``), both as :class:`PromptWord`;
:func:`token_times` turns either into a time range for every text token of that text, the input of the
text-token aggregation of S→T traces (paper §2.4; :func:`crosstrace.speech.units.token_unit_ranges`).
"""

from __future__ import annotations

import difflib
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .normalize import (
    WORD_BOUNDARY,
    Normalized,
    normalize_for_ctc,
    spoken_subject_span,
    subject_char_cut,
    subject_char_span,
    subject_word_range,
)

log = logging.getLogger(__name__)

NEG_INF = -1e30


@dataclass(frozen=True)
class WordSegment:
    """One word with its time span in seconds and a confidence in [0, 1] (mean probability)."""

    word: str
    start_s: float
    end_s: float
    score: float


@dataclass(frozen=True)
class LabelSegment:
    """Frames ``[start, end)`` assigned to transcript label ``index`` (after merging repeats)."""

    index: int
    label: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class PromptWord:
    """One whitespace-separated word of a text (the prompt, or its spoken text; characters
    ``[char_start, char_end)``) placed in time.

    ``start_s``/``end_s`` are NaN when the aligner could not place the word; ``spoken`` is False for a word
    with nothing to pronounce (only punctuation, e.g. a lone "-"). ``anchors``: (character offset in the
    text, seconds) where that character's CTC segment starts; only the ctc aligner gives them (for prompt
    words only where its transcript spells the prompt letter for letter).
    """

    word: str
    char_start: int
    char_end: int
    start_s: float
    end_s: float
    spoken: bool = True
    anchors: tuple[tuple[int, float], ...] = ()

    @property
    def placed(self) -> bool:
        return math.isfinite(self.start_s) and math.isfinite(self.end_s)


@dataclass
class Alignment:
    """Aligner output for one prompt. ``status`` is ``"ok"`` or ``"quarantined"`` (then see ``reason``).

    ``words`` are the aligner's own words (spoken words for ctc/whisper, prompt words for tts);
    ``prompt_words`` the prompt's whitespace-separated words placed in time, ``spoken_words`` the words of
    its spoken text placed in time, and ``spoken_subject`` the subject's characters in the spoken text
    (the inputs of :func:`token_times` for ``speech.token_rows`` prompt and spoken).
    """

    known_id: int | str
    aligner: str
    words: list[WordSegment] = field(default_factory=list)
    subject_start_s: float = math.nan
    subject_end_s: float = math.nan
    score: float = math.nan
    status: str = "ok"
    reason: str = ""
    prompt_words: list[PromptWord] = field(default_factory=list)
    spoken_words: list[PromptWord] = field(default_factory=list)
    spoken_subject: tuple[int, int] = (0, 0)

    @property
    def spoken_text(self) -> str:
        return " ".join(w.word for w in self.spoken_words)


def quarantined(known_id, aligner: str, problem: str, words: Sequence[WordSegment] = ()) -> Alignment:
    return Alignment(known_id, aligner, list(words), status="quarantined", reason=f"known_id={known_id}: {problem}")


# --------------------------------------------------------------------------- paper eq. 1
def frames_to_seconds(f_start: int, f_end: int, n_samples: int, n_frames: int, sr: int) -> tuple[float, float]:
    """Paper eq. 1: ``ratio = M / T_frames`` samples per frame, ``s = floor(ratio * f) / sr``.

    ``f_end`` is exclusive (the first frame after the segment).
    """
    if n_frames <= 0 or sr <= 0:
        raise ValueError("n_frames and sr must be positive")
    ratio = n_samples / n_frames
    return math.floor(ratio * f_start) / sr, math.floor(ratio * f_end) / sr


# --------------------------------------------------------------------------- trellis + Viterbi
def ctc_trellis(log_probs: np.ndarray, tokens: Sequence[int], blank: int) -> np.ndarray:
    """Trellis ``K`` of shape ``(T+1, N+1)``: ``K[t, j]`` is the best log-probability of the first ``t``
    frames having emitted exactly the first ``j`` labels.

    ``K[t+1, j+1] = max(K[t, j] + lp[t, c_{j+1}],                        # advance to label j+1
                       K[t, j+1] + max(lp[t, blank], lp[t, c_{j+1}]))  # stay (blank or repeat)``
    Before the first label (``j = 0``) only blanks are emitted.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    T, N = lp.shape[0], len(tokens)
    tok = np.asarray(tokens, dtype=np.int64)
    K = np.full((T + 1, N + 1), NEG_INF)
    K[0, 0] = 0.0
    K[1:, 0] = np.cumsum(lp[:, blank])
    if N == 0:
        return K
    for t in range(T):
        advance = K[t, :-1] + lp[t, tok]
        stay = K[t, 1:] + np.maximum(lp[t, blank], lp[t, tok])
        K[t + 1, 1:] = np.maximum(advance, stay)
    return K


def ctc_viterbi(log_probs: np.ndarray, tokens: Sequence[int], blank: int) -> tuple[np.ndarray, np.ndarray]:
    """Best path through :func:`ctc_trellis`.

    Returns ``state[t]`` (number of labels emitted after frame ``t``; frame ``t`` belongs to label
    ``state[t] - 1``, or to the leading silence when 0) and ``prob[t]``, the probability of what frame
    ``t`` emitted on that path. Raises ``ValueError`` if the audio has fewer frames than labels.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    T, N = lp.shape[0], len(tokens)
    if N > T:
        raise ValueError(f"{N} labels cannot be aligned to {T} frames")
    K = ctc_trellis(lp, tokens, blank)
    state = np.zeros(T, dtype=np.int64)
    prob = np.zeros(T)
    j = N
    for t in range(T, 0, -1):
        state[t - 1] = j
        if j == 0:
            prob[t - 1] = math.exp(lp[t - 1, blank])
            continue
        c = tokens[j - 1]
        stay_lp = max(lp[t - 1, blank], lp[t - 1, c])
        stay = K[t - 1, j] + stay_lp
        advance = K[t - 1, j - 1] + lp[t - 1, c]
        # advance when it is at least as good, or when staying would leave too few frames for the rest
        if advance >= stay or t - 1 < j:
            prob[t - 1] = math.exp(lp[t - 1, c])
            j -= 1
        else:
            prob[t - 1] = math.exp(stay_lp)
    return state, prob


def merge_label_segments(state: np.ndarray, prob: np.ndarray, labels: Sequence[str],
                         log_probs: np.ndarray | None = None, tokens: Sequence[int] | None = None,
                         blank: int = 0) -> list[LabelSegment]:
    """Merge consecutive frames on the same label into one segment scored by their mean probability.

    A label's segment holds the frame that emitted it and the following frames that stay on it
    (blanks or repeats), so inner words end where the next ``|`` starts (as in the paper). The last
    label would then absorb all trailing silence; given ``log_probs`` and ``tokens``, its trailing
    frames that are more likely blank than the label are cut off (the leading silence is already
    outside any label).
    """
    segs: list[LabelSegment] = []
    T = len(state)
    t = 0
    while t < T:
        j = int(state[t])
        u = t
        while u < T and state[u] == j:
            u += 1
        if j > 0:
            end = u
            if log_probs is not None and tokens is not None and j == len(labels):
                c = tokens[j - 1]
                while end - 1 > t and log_probs[end - 1, blank] >= log_probs[end - 1, c]:
                    end -= 1
            segs.append(LabelSegment(j - 1, labels[j - 1], t, end, float(np.mean(prob[t:end]))))
        t = u
    return segs


def label_to_word_frames(segs: Sequence[LabelSegment], boundary: str = WORD_BOUNDARY) -> list[tuple[str, int, int, float]]:
    """Group label segments into words at ``boundary`` labels: ``(word, start, end, score)`` in frames,
    score = frame-weighted mean of the letters' segment scores."""
    words: list[tuple[str, int, int, float]] = []
    cur: list[LabelSegment] = []

    def flush() -> None:
        if cur:
            n = sum(s.end - s.start for s in cur)
            score = sum(s.score * (s.end - s.start) for s in cur) / n
            words.append(("".join(s.label for s in cur), cur[0].start, cur[-1].end, score))
            cur.clear()

    for s in segs:
        if s.label == boundary:
            flush()
        else:
            cur.append(s)
    flush()
    return words


# --------------------------------------------------------------------------- CTC aligner
class CTCAligner:
    """Forced alignment with a character CTC model (``Wav2Vec2ForCTC``, ``HubertForCTC``...)."""

    name = "ctc"

    def __init__(self, model, vocab: dict[str, int], blank_id: int = 0, normalize_audio: bool = True,
                 sample_rate: int = 16000, subject_chars: bool = False):
        """``model`` returns ``.logits`` (B, T, V) for raw 16 kHz audio; ``vocab`` maps labels to ids
        (single characters and ``|``); ``subject_chars`` cuts subject boundaries at the subject's own
        letters inside a word (``Finland's``) instead of the word edges (the paper's spoken-token level).
        """
        import torch

        self.model = model.eval()
        self.vocab = dict(vocab)
        self.blank_id = blank_id
        self.normalize_audio = normalize_audio
        self.sample_rate = sample_rate
        self.subject_chars = subject_chars
        self._torch = torch
        chars = {k for k in self.vocab if len(k) == 1}
        self.lower = "A" not in chars and "a" in chars
        self.chars = frozenset(c.upper() for c in chars)

    @classmethod
    def from_pretrained(cls, path: str, device: str = "cpu", subject_chars: bool = False) -> CTCAligner:
        """Load a local folder (or a hub id when online) holding a CTC model and its tokenizer."""
        from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer

        model = AutoModelForCTC.from_pretrained(path, weights_only=True).to(device)
        tok = AutoTokenizer.from_pretrained(path)
        try:
            fe = AutoFeatureExtractor.from_pretrained(path)
            norm = bool(getattr(fe, "do_normalize", True))
        except (OSError, ValueError):
            norm = True
        blank = tok.pad_token_id if tok.pad_token_id is not None else 0
        return cls(model, tok.get_vocab(), blank, norm, subject_chars=subject_chars)

    def log_probs(self, audio16k: np.ndarray) -> np.ndarray:
        """Frame-level log-probabilities ``(T_frames, V)`` (about 50 frames per second)."""
        torch = self._torch
        x = torch.as_tensor(np.asarray(audio16k, dtype=np.float32))[None]
        if self.normalize_audio:
            x = (x - x.mean()) / torch.sqrt(x.var() + 1e-7)
        dev = next(self.model.parameters()).device
        with torch.inference_mode():
            logits = self.model(x.to(dev)).logits[0]
        return torch.log_softmax(logits.float(), dim=-1).cpu().numpy()

    def align_words(self, audio16k: np.ndarray, words: Sequence[str]) -> list[WordSegment]:
        """Align spoken words (already in the model's alphabet) and return their time spans."""
        return self._align(audio16k, words)[0]

    def _align(self, audio16k: np.ndarray, words: Sequence[str]):
        labels = list(WORD_BOUNDARY.join(words))
        if self.lower:
            labels = [c.lower() if c != WORD_BOUNDARY else c for c in labels]
        missing = sorted({c for c in labels if c not in self.vocab})
        if missing:
            raise ValueError(f"labels {missing} are not in the CTC vocabulary")
        lp = self.log_probs(audio16k)
        tokens = [self.vocab[c] for c in labels]
        state, prob = ctc_viterbi(lp, tokens, self.blank_id)
        segs = merge_label_segments(state, prob, labels, lp, tokens, self.blank_id)
        out = []
        for word, f0, f1, score in label_to_word_frames(segs):
            s0, s1 = frames_to_seconds(f0, f1, len(audio16k), lp.shape[0], self.sample_rate)
            out.append(WordSegment(word.upper(), s0, s1, score))
        return out, segs, lp.shape[0]

    def align(self, known_id, audio16k: np.ndarray, prompt: str, subject: str) -> Alignment:
        norm = normalize_for_ctc(prompt, self.chars | {WORD_BOUNDARY})
        if norm.unmappable:
            return quarantined(known_id, self.name, f"characters outside the CTC alphabet: {''.join(norm.unmappable)!r}")
        if not norm.words:
            return quarantined(known_id, self.name, "prompt has no speakable word")
        try:
            w0, w1 = subject_word_range(norm, prompt, subject)
            words, segs, n_frames = self._align(audio16k, norm.words)
        except ValueError as e:
            return quarantined(known_id, self.name, str(e))
        out = subject_alignment(known_id, self.name, words, w0, w1)
        if out.status == "ok":
            out.prompt_words = self._prompt_words(norm, words, segs, len(audio16k), n_frames)
            out.spoken_words = spoken_words_placed(norm, words, self._letter_starts(norm, segs, len(audio16k), n_frames))
            out.spoken_subject = spoken_subject_span(norm, prompt, subject)
        if self.subject_chars and out.status == "ok":
            self._cut_to_subject_chars(out, norm, prompt, subject, segs, w0, w1, len(audio16k), n_frames)
        return out

    def _prompt_words(self, norm: Normalized, words: Sequence[WordSegment], segs: Sequence[LabelSegment],
                      n_samples: int, n_frames: int) -> list[PromptWord]:
        """Prompt words from the spoken words, with an anchor at the start of every letter's CTC segment
        for spoken words that spell the prompt letter for letter (not numbers or symbols read out)."""
        first_label = [sum(len(w) + 1 for w in norm.words[:k]) for k in range(len(norm.words))]
        by_index = {sg.index: sg for sg in segs}
        anchors: dict[int, list[tuple[int, float]]] = {}
        for i, origin in enumerate(norm.char_to_orig):
            if not origin or any(o is None for o in origin):
                continue
            for p, o in enumerate(origin):
                sg = by_index.get(first_label[i] + p)
                if sg is not None:
                    t = frames_to_seconds(sg.start, sg.start, n_samples, n_frames, self.sample_rate)[0]
                    anchors.setdefault(norm.word_to_orig[i], []).append((int(o), t))
        return prompt_words_from_spoken(norm, words, anchors)

    def _letter_starts(self, norm: Normalized, segs: Sequence[LabelSegment], n_samples: int,
                       n_frames: int) -> list[list[float]]:
        """Per spoken word, the seconds at which each letter's CTC segment starts (eq. 1)."""
        by_index = {sg.index: sg for sg in segs}
        out, first = [], 0
        for w in norm.words:
            out.append([frames_to_seconds(by_index[first + p].start, 0, n_samples, n_frames, self.sample_rate)[0]
                        if first + p in by_index else math.nan for p in range(len(w))])
            first += len(w) + 1
        return out

    def _cut_to_subject_chars(self, out: Alignment, norm: Normalized, prompt: str, subject: str,
                              segs: Sequence[LabelSegment], w0: int, w1: int, n_samples: int, n_frames: int) -> None:
        """Move the subject's boundaries from word edges to the edges of the subject's own letters
        (``Finland's`` -> ``FINLAND``) when the boundary word spells the prompt verbatim."""
        start, end = subject_char_span(prompt, subject)
        first_label = [sum(len(w) + 1 for w in norm.words[:k]) for k in range(len(norm.words))]
        by_index = {sg.index: sg for sg in segs}
        cut = subject_char_cut(norm, w0, start, end)
        if cut and cut[0] > 0:
            f = by_index[first_label[w0] + cut[0]].start
            out.subject_start_s = frames_to_seconds(f, f, n_samples, n_frames, self.sample_rate)[0]
        cut = subject_char_cut(norm, w1 - 1, start, end)
        if cut and cut[1] < len(norm.words[w1 - 1]):
            f = by_index[first_label[w1 - 1] + cut[1] - 1].end
            out.subject_end_s = frames_to_seconds(f, f, n_samples, n_frames, self.sample_rate)[0]


def subject_alignment(known_id, aligner: str, words: Sequence[WordSegment], w0: int, w1: int) -> Alignment:
    """Subject span = start of word ``w0`` to end of word ``w1 - 1``; score = mean over the subject words."""
    if not 0 <= w0 < w1 <= len(words):
        return quarantined(known_id, aligner, f"subject words [{w0}, {w1}) missing from an alignment of {len(words)} words", words)
    sub = words[w0:w1]
    return Alignment(known_id, aligner, list(words), sub[0].start_s, sub[-1].end_s,
                     float(np.mean([w.score for w in sub])))


# --------------------------------------------------------------------------- TTS timings
def tts_alignment(known_id, prompt: str, subject: str, word_timings: Sequence[WordSegment] | None) -> Alignment:
    """Subject span from synthesiser word timings, one per whitespace token of ``prompt``.

    Tokens the synthesiser merged into one group share one span (see :mod:`.tts`); if such a group
    straddles a subject boundary ("... in the| Beatles" with "the" in the subject) the boundary is
    unknown and the prompt is quarantined. Merges inside the subject or outside it are harmless.
    """
    if word_timings is None:
        return quarantined(known_id, "tts", "the synthesiser reported no word timings")
    tokens = prompt.split()
    if len(word_timings) != len(tokens):
        return quarantined(known_id, "tts", f"{len(word_timings)} word timings for {len(tokens)} prompt words")
    norm = normalize_for_ctc(prompt)
    try:
        w0, w1 = subject_word_range(norm, prompt, subject)
    except ValueError as e:
        return quarantined(known_id, "tts", str(e), word_timings)
    t0, t1 = norm.word_to_orig[w0], norm.word_to_orig[w1 - 1] + 1

    def same(a: WordSegment, b: WordSegment) -> bool:
        return (a.start_s, a.end_s) == (b.start_s, b.end_s) and a.end_s > a.start_s

    if (t0 > 0 and same(word_timings[t0 - 1], word_timings[t0])) or \
            (t1 < len(word_timings) and same(word_timings[t1], word_timings[t1 - 1])):
        return quarantined(known_id, "tts", "a subject boundary lies inside a merged TTS word group", word_timings)
    out = subject_alignment(known_id, "tts", word_timings, t0, t1)
    if out.status == "ok":
        out.prompt_words = [PromptWord(prompt[a:b], a, b, w.start_s, w.end_s, spoken=w.end_s > w.start_s)
                            for (a, b), w in zip(prompt_word_spans(prompt), word_timings, strict=True)]
        out.spoken_words = spoken_words_placed(norm, spoken_from_prompt_words(norm, out.prompt_words))
        out.spoken_subject = spoken_subject_span(norm, prompt, subject)
    return out


# --------------------------------------------------------------------------- Whisper timestamps
def whisper_alignment(known_id, prompt: str, subject: str,
                      hyp_words: Sequence[tuple[str, float, float, float]]) -> Alignment:
    """Match Whisper's words ``(word, start, end, prob)`` to the prompt's spoken words.

    Both sides go through :func:`normalize_for_ctc`; ``difflib`` matches equal words, a replaced block
    of the same length maps one to one, a replaced block of another length shares its time span among
    the prompt words in proportion to their letters (score halved). Prompt words with no Whisper word
    at all (deleted) leave the alignment incomplete; the prompt is quarantined only if the subject is
    among them.
    """
    name = "whisper"
    ref = normalize_for_ctc(prompt)
    hyp: list[tuple[str, float, float, float]] = []
    for w, s, e, p in hyp_words:
        for sw in normalize_for_ctc(w).words:
            hyp.append((sw, float(s), float(e), float(p)))
    try:
        w0, w1 = subject_word_range(ref, prompt, subject)
    except ValueError as e:
        return quarantined(known_id, name, str(e))
    if not hyp:
        return quarantined(known_id, name, "Whisper returned no words")
    seg: list[WordSegment | None] = [None] * len(ref.words)
    sm = difflib.SequenceMatcher(a=ref.words, b=[h[0] for h in hyp], autojunk=False)
    for op, i0, i1, j0, j1 in sm.get_opcodes():
        if op == "equal" or (op == "replace" and i1 - i0 == j1 - j0):
            for i, j in zip(range(i0, i1), range(j0, j1), strict=True):
                _, s, e, p = hyp[j]
                seg[i] = WordSegment(ref.words[i], s, e, p if op == "equal" else p / 2)
        elif op == "replace":
            s, e = hyp[j0][1], hyp[j1 - 1][2]
            p = float(np.mean([h[3] for h in hyp[j0:j1]])) / 2
            lens = np.array([len(ref.words[i]) for i in range(i0, i1)], dtype=float)
            edges = s + (e - s) * np.concatenate([[0], np.cumsum(lens)]) / lens.sum()
            for k, i in enumerate(range(i0, i1)):
                seg[i] = WordSegment(ref.words[i], float(edges[k]), float(edges[k + 1]), p)
    if any(seg[i] is None for i in range(w0, w1)):
        done = [s for s in seg if s is not None]
        return quarantined(known_id, name, f"subject words {ref.words[w0:w1]} missing from the Whisper transcript", done)
    words = [s if s is not None else WordSegment(ref.words[i], math.nan, math.nan, 0.0) for i, s in enumerate(seg)]
    out = subject_alignment(known_id, name, words, w0, w1)
    if out.status == "ok":
        out.prompt_words = prompt_words_from_spoken(ref, words)
        out.spoken_words = spoken_words_placed(ref, words)
        out.spoken_subject = spoken_subject_span(ref, prompt, subject)
    return out


# --------------------------------------------------------------------------- prompt words → text tokens
def prompt_word_spans(prompt: str) -> list[tuple[int, int]]:
    """Character spans of the whitespace-separated words of ``prompt``."""
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", prompt)]


def prompt_words_from_spoken(norm: Normalized, spoken: Sequence[WordSegment],
                             anchors: dict[int, list[tuple[int, float]]] | None = None) -> list[PromptWord]:
    """Prompt words from spoken words (one per ``norm.words``): a prompt word spans its spoken words
    ("1990s" -> NINETEEN NINETIES); NaN if one of them is unplaced; not spoken if it has none ("-")."""
    anchors = anchors or {}
    out = []
    for k, (a, b) in enumerate(norm.orig_spans):
        mine = [spoken[i] for i, o in enumerate(norm.word_to_orig) if o == k]
        text = norm.original[a:b]
        if not mine:
            out.append(PromptWord(text, a, b, math.nan, math.nan, spoken=False))
        elif any(not (math.isfinite(w.start_s) and math.isfinite(w.end_s)) for w in mine):
            out.append(PromptWord(text, a, b, math.nan, math.nan))
        else:
            out.append(PromptWord(text, a, b, mine[0].start_s, mine[-1].end_s, anchors=tuple(anchors.get(k, ()))))
    return out


def spoken_from_prompt_words(norm: Normalized, words: Sequence[PromptWord]) -> list[WordSegment]:
    """Spoken words timed from prompt words (the synthesiser times prompt words): the spoken words of one
    prompt word share its span in proportion to their letters ("1960s" → NINETEEN NINETIES)."""
    out: list[WordSegment] = []
    for k, pw in enumerate(words):
        mine = [i for i, o in enumerate(norm.word_to_orig) if o == k]
        lens = np.array([len(norm.words[i]) for i in mine], dtype=float)
        edges = pw.start_s + (pw.end_s - pw.start_s) * np.concatenate([[0], np.cumsum(lens)]) / max(lens.sum(), 1)
        out += [WordSegment(norm.words[i], float(edges[n]), float(edges[n + 1]), 1.0) for n, i in enumerate(mine)]
    return out


def spoken_words_placed(norm: Normalized, words: Sequence[WordSegment],
                        letter_starts: Sequence[Sequence[float]] | None = None) -> list[PromptWord]:
    """The words of the spoken text (:attr:`Normalized.spoken_text`) placed in time, one per spoken word
    (``words``, in order). ``letter_starts``: per spoken word, the seconds at which each CTC letter's
    segment starts; they become anchors at the characters of the spoken text (the ctc aligner)."""
    if len(words) != len(norm.words):
        raise ValueError(f"{len(words)} timed words for the {len(norm.words)} spoken words {norm.words}")
    out = []
    for i, (c0, c1) in enumerate(norm.spoken_spans):
        w = words[i]
        anchors: tuple[tuple[int, float], ...] = ()
        if letter_starts is not None:
            anchors = tuple((c0 + n, float(letter_starts[i][p])) for n, p in enumerate(norm.written_to_letter[i])
                            if math.isfinite(letter_starts[i][p]))
        out.append(PromptWord(norm.written[i], c0, c1, float(w.start_s), float(w.end_s), anchors=anchors))
    return out


class TokenTimingError(ValueError):
    """The prompt's words cannot all be placed in time (the S→T prompt is quarantined)."""


PAUSE_OWNERS = ("none", "preceding")


def token_times(text: str, token_offsets: Sequence[tuple[int, int]], words: Sequence[PromptWord],
                pause_owner: str = "none") -> tuple[list[float], list[float]]:
    """A time range ``[start, end)`` for every text token of ``text`` (paper §2.4: traces of speech units
    are aggregated by their text tokens), in order and never overlapping.

    ``text``: the spoken text (the paper's spoken text tokens) or the prompt itself; ``token_offsets``: the
    character span in ``text`` of each token (the model's tokenizer on it, e.g.
    :func:`crosstrace.models.spiritlm.t2t_encode`); ``words``: the whitespace-separated words of ``text``
    placed by an aligner (:class:`PromptWord`).

    1. Words: a word lasts from its start to its own end, so a pause between two words belongs to no word
       (``pause_owner="none"``, the paper: a word's segment ends where the word separator starts), or to the
       next word's start, so the pause after a word belongs to it (``"preceding"``); the last word ends at
       its own end either way. Consecutive words with the same span (a TTS merge, "in the") share it as one
       word; a word with nothing to pronounce ("-") is timed as part of the next word.
    2. Tokens inside a word share its time by character share: each token weighs its non-space characters
       (a token of spaces only, such as Llama's bare ``▁`` before digits, weighs one). Where the ctc aligner
       gives anchors (the start of each letter's CTC segment), token boundaries are interpolated between
       the anchors instead of across the whole word, i.e. they fall on CTC character frames. The tokens of
       one word are contiguous.

    Raises :class:`TokenTimingError` for a word the aligner could not place, or words out of order.
    """
    if pause_owner not in PAUSE_OWNERS:
        raise ValueError(f"pause_owner must be one of {PAUSE_OWNERS}, got {pause_owner!r}")
    prompt = text
    spans = prompt_word_spans(prompt)
    if [(w.char_start, w.char_end) for w in words] != spans:
        raise TokenTimingError(f"{len(words)} aligned words do not match the {len(spans)} words of {prompt!r}")
    for w in words:
        if w.spoken and not w.placed:
            raise TokenTimingError(f"the aligner could not place the word {w.word!r}")
    spoken = [i for i, w in enumerate(words) if w.spoken]
    if not spoken:
        raise TokenTimingError("the prompt has no spoken word")
    # groups of words sharing one time span; unspoken words join the next group (the last group if none)
    groups: list[list[int]] = []
    pending: list[int] = []
    prev = None
    for i, w in enumerate(words):
        if not w.spoken:
            pending.append(i)
            continue
        key = (w.start_s, w.end_s)
        if prev is not None and key == prev and w.end_s > w.start_s:
            groups[-1] += pending + [i]
        else:
            groups.append(pending + [i])
        pending, prev = [], key
    groups[-1] += pending
    heads = [words[next(i for i in g if words[i].spoken)] for g in groups]
    for a, b in zip(heads, heads[1:], strict=False):
        if b.start_s < a.start_s or a.end_s < a.start_s:
            raise TokenTimingError(f"the aligner placed {b.word!r} at {b.start_s:.3f} s, before {a.word!r} "
                                   f"at {a.start_s:.3f} s")
    g_start = [h.start_s for h in heads]
    if pause_owner == "preceding":
        g_end = g_start[1:] + [max(heads[-1].end_s, heads[-1].start_s)]
    else:  # a word ends at its own end (never after the next word's start: aligners can overlap words)
        g_end = [max(g_start[g], min([h.end_s, *g_start[g + 1 : g + 2]])) for g, h in enumerate(heads)]
    word_group = {i: gi for gi, g in enumerate(groups) for i in g}

    def group_at(c: int) -> int:
        """Group of the word holding character c, or of the first word after it (spaces)."""
        for i, (_, b) in enumerate(spans):
            if c < b:
                return word_group[i]
        return len(groups) - 1

    # each token: its group and its weighted characters (offsets into the prompt)
    tok_group, tok_chars = [], []
    for c0, c1 in token_offsets:
        chars = [c for c in range(c0, c1) if not prompt[c].isspace()]
        tok_group.append(group_at(chars[0] if chars else c0))
        tok_chars.append(chars)
    if any(b < a for a, b in zip(tok_group, tok_group[1:], strict=False)):
        raise TokenTimingError("text tokens are not in prompt order")
    starts = [math.nan] * len(token_offsets)
    for gi in range(len(groups)):
        toks = [t for t, g in enumerate(tok_group) if g == gi]
        if not toks:
            continue  # a group without a token of its own: its time goes to the token before (contiguity)
        weights = [max(1, len(tok_chars[t])) for t in toks]
        cum = np.concatenate([[0.0], np.cumsum(weights)])
        # anchor coordinates: characters counted in token order (a spaces-only token counts one)
        pos = {}
        for t, c0 in zip(toks, cum[:-1], strict=True):
            for n, c in enumerate(tok_chars[t]):
                pos.setdefault(c, c0 + (n if tok_chars[t] else 0))
        xs, ts = [0.0], [g_start[gi]]
        for i in groups[gi]:
            for c, t in sorted(words[i].anchors):
                x = pos.get(c)
                if x is not None and xs[-1] < x < cum[-1] and ts[-1] <= t <= g_end[gi]:
                    xs.append(float(x))
                    ts.append(float(t))
        xs.append(float(cum[-1]))
        ts.append(g_end[gi])
        for t, x in zip(toks, cum[:-1], strict=True):
            starts[t] = float(np.interp(x, xs, ts))
    # inside a word each token ends where the next begins; the last token of a word ends with the word, so
    # the gap to the next word (a pause) belongs to no token; with pause_owner "preceding" every token runs
    # to the next token's start instead
    starts[0] = g_start[0]
    for t in range(1, len(starts)):
        if math.isnan(starts[t]):
            starts[t] = starts[t - 1]
    ends = [starts[t + 1] if t + 1 < len(starts) and tok_group[t + 1] == tok_group[t] else g_end[tok_group[t]]
            for t in range(len(starts))]
    if pause_owner == "preceding":  # contiguous: a token runs to the next token's start
        ends = starts[1:] + [g_end[-1]]
    return starts, ends


# --------------------------------------------------------------------------- accuracy
def boundary_errors(reference, candidate) -> pd.DataFrame:  # noqa: F821
    """Absolute subject-boundary errors in ms of ``candidate`` against ``reference`` (both alignment
    tables with ``known_id``, ``subject_start_s``, ``subject_end_s``, ``status``; only rows ``ok`` in
    both count). Returns one row per known_id: ``start_err_ms``, ``end_err_ms``."""
    import pandas as pd

    ref = reference[reference["status"] == "ok"][["known_id", "subject_start_s", "subject_end_s"]]
    cand = candidate[candidate["status"] == "ok"][["known_id", "subject_start_s", "subject_end_s"]]
    m = ref.merge(cand, on="known_id", suffixes=("_ref", "_cand"))
    return pd.DataFrame({
        "known_id": m["known_id"],
        "start_err_ms": (m["subject_start_s_cand"] - m["subject_start_s_ref"]).abs() * 1000,
        "end_err_ms": (m["subject_end_s_cand"] - m["subject_end_s_ref"]).abs() * 1000,
    })


def alignment_accuracy(alignments, reference: str = "tts") -> pd.DataFrame:  # noqa: F821
    """Mean and median absolute subject-boundary error (ms, start and end pooled) of every aligner
    against ``reference`` in a long alignment table (column ``aligner``)."""
    import pandas as pd

    ref = alignments[alignments["aligner"] == reference]
    rows = []
    for name, cand in alignments.groupby("aligner"):
        if name == reference:
            continue
        err = boundary_errors(ref, cand)
        both = np.concatenate([err["start_err_ms"].to_numpy(), err["end_err_ms"].to_numpy()])
        rows.append({
            "aligner": name, "reference": reference, "n_prompts": len(err),
            "mean_abs_err_ms": float(both.mean()) if len(both) else math.nan,
            "median_abs_err_ms": float(np.median(both)) if len(both) else math.nan,
            "mean_start_err_ms": float(err["start_err_ms"].mean()) if len(err) else math.nan,
            "mean_end_err_ms": float(err["end_err_ms"].mean()) if len(err) else math.nan,
        })
    return pd.DataFrame(rows, columns=["aligner", "reference", "n_prompts", "mean_abs_err_ms",
                                       "median_abs_err_ms", "mean_start_err_ms", "mean_end_err_ms"])
