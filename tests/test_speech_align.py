"""CTC trellis/Viterbi, paper eq. 1, TTS/Whisper subject spans and boundary accuracy (pure, fast)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from crosstrace.speech.align import (
    WordSegment,
    alignment_accuracy,
    boundary_errors,
    ctc_trellis,
    ctc_viterbi,
    frames_to_seconds,
    label_to_word_frames,
    merge_label_segments,
    tts_alignment,
    whisper_alignment,
)
from crosstrace.speech.tts import match_groups_to_tokens

CHARS = ["<b>", "|", "A", "B", "C", "D", "L"]


def peaked(plan, V=7, p=0.9, seed=None):
    """Log-probs where frame t emits plan[t] with probability ~p (optionally jittered)."""
    rng = np.random.default_rng(seed)
    probs = np.full((len(plan), V), (1 - p) / (V - 1))
    for t, c in enumerate(plan):
        probs[t, c] = p
    if seed is not None:
        probs *= rng.uniform(0.8, 1.2, size=probs.shape)
    probs /= probs.sum(1, keepdims=True)
    return np.log(probs)


def ids(text):
    return [CHARS.index(c) for c in text]


def test_frames_to_seconds_eq1_hand_computed():
    # 2.76 s at 16 kHz = 44160 samples, 137 frames: ratio = 322.3357...
    # f=10 -> floor(3223.357) = 3223 -> 0.2014375 s; f=50 -> floor(16116.788) = 16116 -> 1.00725 s
    assert frames_to_seconds(10, 50, 44160, 137, 16000) == (0.2014375, 1.00725)
    # exact 320 samples per frame (50 Hz): frame 25 starts at 0.5 s
    assert frames_to_seconds(25, 26, 32000, 100, 16000) == (0.5, 0.52)
    with pytest.raises(ValueError):
        frames_to_seconds(0, 1, 100, 0, 16000)


def test_viterbi_exact_frame_spans_on_known_path():
    text = "AB|CAD"
    plan = [0, 0, 2, 0, 3, 3, 0, 1, 0, 4, 2, 0, 0, 5, 0, 0]
    state, prob = ctc_viterbi(peaked(plan), ids(text), 0)
    assert state.tolist() == [0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 5, 5, 5, 6, 6, 6]
    segs = merge_label_segments(state, prob, list(text))
    assert [(s.label, s.start, s.end) for s in segs] == [
        ("A", 2, 4), ("B", 4, 7), ("|", 7, 9), ("C", 9, 10), ("A", 10, 13), ("D", 13, 16)]
    assert all(s.score == pytest.approx(0.9) for s in segs)
    words = label_to_word_frames(segs)
    assert [(w, a, b) for w, a, b, _ in words] == [("AB", 2, 7), ("CAD", 9, 16)]


def test_viterbi_repeated_letter_needs_separate_frames():
    # "LL": two L spikes separated by a blank; each L gets its own segment
    plan = [0, 6, 0, 6, 0]
    state, prob = ctc_viterbi(peaked(plan), ids("LL"), 0)
    segs = merge_label_segments(state, prob, ["L", "L"])
    assert [(s.start, s.end) for s in segs] == [(1, 3), (3, 5)]
    with pytest.raises(ValueError, match="cannot be aligned"):
        ctc_viterbi(peaked([0, 2]), ids("ABC"), 0)


def _path_score(lp, tokens, states, blank=0):
    total, prev = 0.0, 0
    for t, j in enumerate(states):
        if j == prev + 1:
            total += lp[t, tokens[j - 1]]
        elif j == prev:
            total += lp[t, blank] if j == 0 else max(lp[t, blank], lp[t, tokens[j - 1]])
        else:
            return -math.inf
        prev = j
    return total if prev == len(tokens) else -math.inf


def test_trellis_is_the_optimum_over_all_paths():
    rng = np.random.default_rng(3)
    lp = np.log(rng.dirichlet(np.ones(len(CHARS)), size=7))
    tokens = ids("AB|C")
    K = ctc_trellis(lp, tokens, 0)
    brute = max(_path_score(lp, tokens, s) for s in itertools.product(range(len(tokens) + 1), repeat=7))
    assert K[7, len(tokens)] == pytest.approx(brute)
    state, _ = ctc_viterbi(lp, tokens, 0)
    assert _path_score(lp, tokens, state.tolist()) == pytest.approx(brute)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_viterbi_agrees_with_ctc_segmentation(seed):
    from ctc_segmentation import CtcSegmentationParameters, ctc_segmentation, prepare_text

    rng = np.random.default_rng(seed)
    text = "AB|CAD|BAL"
    plan = [0, 0]
    for c in ids(text):  # each label: one spike, then 0-3 blanks or repeats
        plan += [c] + [int(rng.choice([0, c])) for _ in range(rng.integers(0, 4))]
    plan += [0, 0]
    lp = peaked(plan, seed=seed)
    state, prob = ctc_viterbi(lp, ids(text), 0)
    starts = [s.start for s in merge_label_segments(state, prob, list(text))]

    cfg = CtcSegmentationParameters()
    cfg.char_list, cfg.index_duration, cfg.blank, cfg.excluded_characters = CHARS, 1.0, 0, ""
    gt, _ = prepare_text(cfg, [text])  # "#" + blank + text + blank
    timings, _, _ = ctc_segmentation(cfg, lp.astype(np.float32), gt)
    assert starts == [int(t) for t in timings[2:2 + len(text)]]


def test_tts_alignment_subject_span():
    p = "Vinson Massif is located in the continent of"
    times = [(0.03, 0.36), (0.41, 0.85), (0.92, 1.01), (1.06, 1.57), (1.61, 1.80), (1.61, 1.80), (1.85, 2.43), (2.51, 2.68)]
    segs = [WordSegment(w, a, b, 1.0) for w, (a, b) in zip(p.split(), times, strict=True)]
    a = tts_alignment(5, p, "Vinson Massif", segs)
    assert a.status == "ok" and (a.subject_start_s, a.subject_end_s) == (0.03, 0.85)
    bad = tts_alignment(5, p, "Vinson Massif", segs[:-1])
    assert bad.status == "quarantined" and "known_id=5" in bad.reason
    assert tts_alignment(5, p, "Vinson Massif", None).status == "quarantined"


WHISPER = [("Benson", 0.0, 0.26, 0.8), ("Massif", 0.26, 0.82, 0.9), ("is", 0.82, 0.98, 1.0),
           ("located", 0.98, 1.32, 1.0), ("in", 1.32, 1.66, 1.0), ("the", 1.66, 1.78, 1.0),
           ("continent", 1.78, 2.24, 0.9), ("of...", 2.24, 2.50, 0.7)]


def test_whisper_alignment_matches_prompt_words():
    p = "Vinson Massif is located in the continent of"
    a = whisper_alignment(9, p, "Vinson Massif", WHISPER)
    assert a.status == "ok"
    assert (a.subject_start_s, a.subject_end_s) == (0.0, 0.82)
    assert a.score == pytest.approx((0.8 / 2 + 0.9) / 2)  # substituted word counts half
    assert [w.word for w in a.words] == ["VINSON", "MASSIF", "IS", "LOCATED", "IN", "THE", "CONTINENT", "OF"]
    # a merged hypothesis word ("Vinsonmassif") is shared by letters
    merged = [("Vinsonmassif", 0.0, 0.82, 0.6)] + WHISPER[2:]
    m = whisper_alignment(9, p, "Massif", merged)
    assert m.status == "ok" and m.subject_start_s == pytest.approx(0.41) and m.subject_end_s == pytest.approx(0.82)


def test_whisper_alignment_quarantines_missing_subject():
    p = "Vinson Massif is located in the continent of"
    a = whisper_alignment(9, p, "Vinson Massif", WHISPER[2:])
    assert a.status == "quarantined" and "known_id=9" in a.reason and "VINSON" in a.reason
    assert whisper_alignment(9, p, "Everest", WHISPER).status == "quarantined"


def test_alignment_accuracy_against_tts():
    t = pd.DataFrame({
        "known_id": [1, 2, 3, 1, 2, 3, 1, 2],
        "aligner": ["tts"] * 3 + ["ctc"] * 3 + ["whisper"] * 2,
        "subject_start_s": [0.10, 0.20, 0.30, 0.12, 0.20, 0.0, 0.00, 0.25],
        "subject_end_s": [0.50, 0.60, 0.70, 0.46, 0.61, 0.0, 0.50, 0.60],
        "status": ["ok"] * 5 + ["quarantined"] + ["ok"] * 2,
    })
    err = boundary_errors(t[t.aligner == "tts"], t[t.aligner == "ctc"])
    assert err["start_err_ms"].tolist() == pytest.approx([20, 0]) and err["end_err_ms"].tolist() == pytest.approx([40, 10])
    acc = alignment_accuracy(t).set_index("aligner")
    assert acc.loc["ctc", "n_prompts"] == 2
    assert acc.loc["ctc", "mean_abs_err_ms"] == pytest.approx(17.5)  # (20+0+40+10)/4
    assert acc.loc["ctc", "median_abs_err_ms"] == pytest.approx(15.0)
    assert acc.loc["whisper", "mean_abs_err_ms"] == pytest.approx(37.5)  # (100+50+0+0)/4


def test_match_piper_groups_to_tokens():
    # "in the" spoken as one group; "1990s" as three groups
    token_groups = [["ɪz"], ["ɪn"], ["ðə"], ["naɪntiːn", "hʌndɹɪd", "naɪntiz"], ["ʌv"]]
    groups = ["ɪz", "ɪnðə", "naɪntiːn", "hʌndɹɪd", "naɪntiz", "ʌv"]
    assert match_groups_to_tokens(groups, token_groups) == [
        (0, 1, True), (1, 2, False), (1, 2, False), (2, 5, True), (5, 6, True)]
    assert match_groups_to_tokens(groups[:1], token_groups) is None


def test_ctc_chain_recovers_word_times_from_oracle_emissions():
    """Emissions that spell each word inside known time spans (50 Hz frames, 2.76 s of audio): Viterbi,
    merging, grouping and eq. 1 give back the spans to within one frame (20 ms)."""
    chars = ["<pad>", "|"] + list("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
    words = ["VINSON", "MASSIF", "IS", "LOCATED"]
    spans = [(0.04, 0.36), (0.41, 0.85), (0.92, 1.01), (1.06, 1.57)]
    n_samples, sr = 44160, 16000
    T = (n_samples - 400) // 320 + 1
    plan = np.zeros(T, dtype=int)
    for w, (a, b) in zip(words, spans, strict=True):
        f0, f1 = int(round(a * 50)), int(round(b * 50))
        for k, c in enumerate(w):  # one spike per letter, spread over the word's frames
            plan[f0 + (f1 - 1 - f0) * k // (len(w) - 1)] = chars.index(c)  # first at f0, last at f1 - 1
        if w != words[-1]:
            plan[f1] = 1  # "|" right after the word (none after the last)
    lp = peaked(plan.tolist(), V=len(chars))
    labels = list("|".join(words))
    tokens = [chars.index(c) for c in labels]
    state, prob = ctc_viterbi(lp, tokens, 0)
    untrimmed = label_to_word_frames(merge_label_segments(state, prob, labels))
    assert untrimmed[-1][2] == T  # without trimming the last word runs to the end of the audio
    got = label_to_word_frames(merge_label_segments(state, prob, labels, lp, tokens, 0))
    assert [g[0] for g in got] == words
    for (_, f0, _, _), (a, _b) in zip(got, spans, strict=True):
        s0, _ = frames_to_seconds(f0, f0, n_samples, T, sr)
        assert abs(s0 - a) <= 0.021
    # word ends: the last letter's segment runs until the "|" spike; the final word's trailing silence is cut
    for (_, _, f1, _), (_a, b) in zip(got, spans, strict=True):
        assert abs(frames_to_seconds(f1, f1, n_samples, T, sr)[0] - b) <= 0.021
