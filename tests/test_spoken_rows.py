"""S→T rows as the paper defines them (issue 21 §2–§4): spoken text tokens, pauses that belong to no word,
one definition of the subject's units, eq. 2 across HuBERT's 100 s chunks.

Every expected number below was worked out by hand from the comments, not computed by the code under test.
The hand example is the one docs/method.md walks through: "The 1960s began in", subject "The 1960s".
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from crosstrace.speech.align import (
    PromptWord,
    WordSegment,
    spoken_from_prompt_words,
    spoken_words_placed,
    token_times,
)
from crosstrace.speech.normalize import normalize_for_ctc, spoken_subject_span
from crosstrace.speech.pipeline import prompt_words_to_json
from crosstrace.speech.prompts import (
    TextTokens,
    map_text_tokens,
    row_prompt,
    subject_positions,
    subject_unit_ids,
)
from crosstrace.speech.units import FrameGrid, token_unit_ranges, units_row
from crosstrace.trace.tables import TextTokenMap, aggregate_by_text_tokens, category_table, unit_view

PROMPT, SUBJECT = "The 1960s began in", "The 1960s"
SPOKEN = "The nineteen sixties began in"
# spoken text tokens (as a Llama-like tokenizer writes them after [Text]), character offsets into SPOKEN
TOKENS = ["The", "▁nin", "ete", "en", "▁six", "ties", "▁began", "▁in"]
OFFSETS = [(0, 3), (3, 7), (7, 10), (10, 12), (12, 16), (16, 20), (20, 26), (26, 29)]
# spoken words placed by an aligner: a short pause after "The" (0.36-0.40 s) and a long one after SIXTIES
# (1.08-1.40 s); NINETEEN lasts 0.40 s over 8 letters (0.05 s each), SIXTIES 0.28 s over 7 (0.04 s each)
WORDS = [PromptWord("The", 0, 3, 0.20, 0.36), PromptWord("nineteen", 4, 12, 0.40, 0.80),
         PromptWord("sixties", 13, 20, 0.80, 1.08), PromptWord("began", 21, 26, 1.40, 1.60),
         PromptWord("in", 27, 29, 1.60, 1.68)]
# 2.0 s = 50 frames at 25 Hz in 13 deduplicated units; unit j covers frames [F_j, F_j+1):
# F = 0 5 9 10 14 18 20 23 27 31 35 40 42 50 -> seconds 0 .20 .36 .40 .56 .72 .80 .92 1.08 1.24 1.40 1.60 1.68 2.0
RUNS = [5, 4, 1, 4, 4, 2, 3, 4, 4, 4, 5, 2, 8]


def test_spoken_text_and_subject():
    n = normalize_for_ctc(PROMPT)
    assert n.words == ["THE", "NINETEEN", "SIXTIES", "BEGAN", "IN"] and n.spoken_text == SPOKEN
    assert spoken_subject_span(n, PROMPT, SUBJECT) == (0, 20)  # "The nineteen sixties": the number is spoken
    # the prompt's own characters where it spells them (case, accents, the possessive kept), punctuation dropped
    n = normalize_for_ctc("Apple's Zürich store, 3rd in Straße-Nord")
    assert n.spoken_text == "Apple's Zürich store third in Straße Nord"
    assert n.written_to_letter[-2] == [0, 1, 2, 3, 4, 6]  # ß is one written character and two letters (SS)
    assert spoken_subject_span(n, n.original, "Apple") == (0, 5)  # "Apple" of "Apple's", as T→T finds it
    assert spoken_subject_span(n, n.original, "store, 3rd") == (15, 26)  # "store third"
    with pytest.raises(ValueError, match="not found"):
        spoken_subject_span(n, n.original, "Paris")


def test_token_times_pauses_belong_to_no_token():
    starts, ends = token_times(SPOKEN, OFFSETS, WORDS)
    # nineteen by character share: nin 3 letters [.40, .55), ete [.55, .70), en [.70, .80); sixties: six [.80, .92),
    # ties [.92, 1.08); every word ends where it ends: the pauses .36-.40 and 1.08-1.40 are no token's
    assert starts == pytest.approx([0.20, 0.40, 0.55, 0.70, 0.80, 0.92, 1.40, 1.60])
    assert ends == pytest.approx([0.36, 0.55, 0.70, 0.80, 0.92, 1.08, 1.60, 1.68])
    # the option: a pause belongs to the word before it: The [.20, .40); sixties [.80, 1.40), 0.60 s shared by
    # letters, six 3/7 of it -> ties starts at .80 + .60·3/7 = 1.0571…
    starts_p, ends_p = token_times(SPOKEN, OFFSETS, WORDS, pause_owner="preceding")
    assert starts_p == pytest.approx([0.20, 0.40, 0.55, 0.70, 0.80, 0.80 + 0.6 * 3 / 7, 1.40, 1.60])
    assert ends_p == pytest.approx([0.40, 0.55, 0.70, 0.80, 0.80 + 0.6 * 3 / 7, 1.40, 1.60, 1.68])
    with pytest.raises(ValueError, match="pause_owner"):
        token_times(SPOKEN, OFFSETS, WORDS, pause_owner="next")


def test_unit_ranges_with_pauses_by_hand():
    tu = token_unit_ranges(*token_times(SPOKEN, OFFSETS, WORDS), RUNS, names=TOKENS)
    # eq. 2: The [5,9) -> u1; nin [10,14) -> u3; ete [13,18) -> u3,u4; en [17,20) -> u4,u5; six [20,23) -> u6;
    # ties [23,27) -> u7; began [35,40) -> u10; in [40,42) -> u11
    assert list(zip(tu.eq2_start, tu.eq2_end, strict=True)) == [(1, 2), (3, 4), (3, 5), (4, 6), (6, 7), (7, 8),
                                                                 (10, 11), (11, 12)]
    # u3 [.40,.56): nin .15 > ete .01; u4 [.56,.72): ete .14 > en .02. u2 (.36-.40) and u8, u9 (1.08-1.40) are
    # pause units, u0 leading and u12 trailing silence
    assert list(zip(tu.unit_start, tu.unit_end, strict=True)) == [(1, 2), (3, 4), (4, 5), (5, 6), (6, 7), (7, 8),
                                                                   (10, 11), (11, 12)]
    assert (tu.lead, tu.pause, tu.trail, tu.n_units) == (1, 3, 1, 13)
    # preceding-word rule: The [.20,.40) frames [5,10) takes u2; six [.80, 1.057) frames [20, 27) -> u6, u7;
    # ties [1.057, 1.40) frames [26, 35) -> u7, u8, u9; u7 [.92, 1.08) goes to six (.137 s > .023 s); no pause unit
    tu = token_unit_ranges(*token_times(SPOKEN, OFFSETS, WORDS, "preceding"), RUNS, names=TOKENS)
    assert list(zip(tu.unit_start, tu.unit_end, strict=True)) == [(1, 3), (3, 4), (4, 5), (5, 6), (6, 8), (8, 10),
                                                                   (10, 11), (11, 12)]
    assert (tu.lead, tu.pause, tu.trail) == (1, 0, 1)


def _known_row(pause_owner: str = "none") -> dict:
    text = TextTokens(list(range(100, 108)), TOKENS, OFFSETS, (0, 6), SPOKEN)  # ids are placeholders
    row = map_text_tokens(text, WORDS, RUNS, pause_owner=pause_owner)
    dedup = [u % 500 for u in range(7, 20)]  # 13 distinct units
    off = 3  # [BOS, ▁, [Speech]]
    return {**row, "known_id": 7, "status": "ok", "dedup": dedup, "run_lengths": RUNS, "n_units": 13, "unit_offset": off,
            "pos_start": off + row["dedup_start"], "pos_end": off + row["dedup_end"], "token_rows": "spoken",
            "pause_owner": pause_owner}


def test_the_subjects_units_follow_the_pause_rule():
    r = _known_row()
    # subject = spoken tokens 0..5 (The nineteen sixties): units u1, u3..u7 -> LM positions 4, 6..10; the pause
    # unit u2 (LM 5) lies inside the span [4, 11) but is not the subject's
    assert (r["subject_token_start"], r["subject_token_end"], r["pause_units"], r["subject_units"]) == (0, 6, 3, 6)
    ids, span = row_prompt(r)
    assert span == (4, 11) and subject_positions(r) == [4, 6, 7, 8, 9, 10]
    assert subject_unit_ids([r]) == [[ids[p] for p in (4, 6, 7, 8, 9, 10)]]
    assert (r["frame_start"], r["frame_end"]) == (5, 27)  # eq. 2 of [.20, 1.08)
    p = _known_row("preceding")  # the pause after "The" is the subject's now, and so is the one after "sixties"
    assert row_prompt(p)[1] == (4, 13) and subject_positions(p) == list(range(4, 13)) and p["pause_units"] == 0


def test_only_the_subjects_units_are_corrupted(ckpt):
    from crosstrace.config import ModelSpec
    from crosstrace.modality import for_run
    from crosstrace.models.family import load, prepare
    from crosstrace.trace import NoiseConfig, Tracer, TraceSettings
    from crosstrace.trace.noise import draw_noise

    spec = ModelSpec.from_dict({"name": "tiny-spirit", "family": "spiritlm", "path": str(ckpt["root"]),
                                "modalities": ["t2t", "s2t"]})
    spec = replace(spec, resolved=prepare(spec), dtype="float32")
    lm = load(spec)
    tracer = Tracer(lm.model, lm.tokenizer, TraceSettings(kinds=("hidden",), window=2, noise=NoiseConfig(samples=2)), 0.1)
    s2t = for_run(spec, "s2t", lm.tokenizer)
    r = _known_row()
    eps = s2t.noise(tracer, r, (4, 11))
    full = draw_noise(0, 7, 2, 7, lm.model.config.hidden_size)
    assert torch.equal(eps[:, 1], torch.zeros_like(eps[:, 1]))  # LM 5, the pause unit: clean
    keep = [0, 2, 3, 4, 5, 6]
    assert torch.equal(eps[:, keep], full[:, keep])  # the subject's units: the seeded draw itself
    assert s2t.noise(tracer, _known_row("preceding"), (4, 13)) is None  # every unit is the subject's
    tr = s2t.trace(tracer, r)
    assert tr.subject_span == (4, 11) and len(tr.input_ids) == 3 + 13 + 1


def test_aggregation_keeps_pause_units_out_of_every_row():
    r = _known_row()
    off = 3
    ranges = [(off + a, off + b) for a, b in zip(r["token_unit_start"], r["token_unit_end"], strict=True)]
    tm = TextTokenMap(7, TOKENS, ranges, (0, 6), 16, 17, 3, "spoken")
    rows = [{"model": "m", "modality": "s2t", "known_id": 7, "kind": "hidden", "token_index": p, "token": f"t{p}",
             "layer": 0, "ie": float(p), "p_restored": p + 0.5, "p_clean": 0.9, "p_corrupted": 0.5, "answer_id": 1,
             "answer": " x", "answer_mode": "top1", "answer_tokens": 1, "subject_start": 4, "subject_end": 11,
             "n_tokens": 17, "noise_scale": 0.3, "samples": 2, "seed": 0, "window": 2, "engine": "fast"}
            for p in range(17)]
    agg, q = aggregate_by_text_tokens(pd.DataFrame(rows), {7: tm})
    assert q.empty and (agg["token_rows"] == "spoken").all()
    # The = LM 4; nin 6; ete 7; en 8; six 9; ties 10; began 13; in 14; [Text] 16 (5, 11, 12 are pauses)
    assert agg.sort_values("token_index")["ie"].tolist() == [4, 6, 7, 8, 9, 10, 13, 14, 16]
    cats = category_table(agg).set_index("category")
    assert cats.loc["middle_subject", "ie"] == pytest.approx((6 + 7 + 8 + 9) / 4) and (cats["token_rows"] == "spoken").all()
    view = unit_view(pd.DataFrame(rows), {7: tm}).sort_values("token_index")
    assert view["region"].tolist() == ["marker"] * 3 + ["silence", "token", "pause"] + ["token"] * 5 + \
        ["pause"] * 2 + ["token"] * 2 + ["silence", "last"]


def test_a_recording_over_100_s_maps_through_chunk_restarts():
    """HuBERT encodes 100 s pieces: 2499 frames in the first (its last 0.04 s has none), frames restart at
    100 s. Units (frames): u0 [0,2494) u1 [2494,2497) u2 [2497,2499) | u3 [2499,2504) u4 [2504,2549)
    u5 [2549,2559) u6 [2559,2599); in seconds u1 99.76-99.88, u2 99.88-99.96, u3 100.0-100.2, u4 100.2-102.0,
    u5 102.0-102.4, u6 102.4-104.0."""
    runs = [2494, 3, 2, 5, 45, 10, 40]
    grid = FrameGrid.hubert([2499, 100], n_frames=2599)
    starts, ends = [99.80, 100.0, 102.0], [99.96, 100.2, 102.4]  # three words, pauses between them
    tu = token_unit_ranges(starts, ends, runs, grid=grid)
    # word 0: frames [2495, 2499) -> u1, u2; word 1: chunk 1 frames [0, 5) -> [2499, 2504) -> u3;
    # word 2: chunk 1 frames [50, 60) -> [2549, 2559) -> u5; u4 is a pause, u0 and u6 silence
    assert list(zip(tu.unit_start, tu.unit_end, strict=True)) == [(1, 3), (3, 4), (5, 6)]
    assert (tu.lead, tu.pause, tu.trail) == (1, 1, 1)
    # without the restarts (frames counted at 25 Hz from 0 s) word 2 would take frames [2550, 2560), i.e. u6 too
    naive = token_unit_ranges(starts, ends, runs)
    assert naive.unit_end[2] == 7


def test_prompt_table_rows_modes_and_chunks(ckpt):
    """The prompt table on the tiny SpiritLM tokenizer (it spells most words letter by letter, so the hand
    example is slowed down 3× and every 25 Hz frame is a unit of its own): spoken rows by default, the
    prompt's rows as the option, the settings and counts recorded, and the units table's chunk layout used."""
    from crosstrace.config import ModelSpec
    from crosstrace.models.family import load, prepare
    from crosstrace.models.hubert import Units
    from crosstrace.speech.prompts import prompt_table

    spec = ModelSpec.from_dict({"name": "tiny-spirit", "family": "spiritlm", "path": str(ckpt["root"]),
                                "modalities": ["t2t", "s2t"]})
    tok = load(replace(spec, resolved=prepare(spec), dtype="float32")).tokenizer
    records = pd.DataFrame({"known_id": [7], "subject": [SUBJECT], "attribute": ["x"], "prompt": [PROMPT]})
    manifest = pd.DataFrame({"known_id": [7], "path": ["a.wav"], "duration_s": [6.0], "status": ["ok"], "reason": [""]})
    norm = normalize_for_ctc(PROMPT)
    slow = [WordSegment(w.word.upper(), 3 * w.start_s, 3 * w.end_s, 1.0) for w in WORDS]
    spoken = spoken_words_placed(norm, slow)
    prompt_words = [PromptWord("The", 0, 3, 0.60, 1.08), PromptWord("1960s", 4, 9, 1.20, 3.24),
                    PromptWord("began", 10, 15, 4.20, 4.80), PromptWord("in", 16, 18, 4.80, 5.04)]
    alignment = pd.DataFrame({"known_id": [7], "aligner": ["tts"], "subject_start_s": [0.6], "subject_end_s": [3.24],
                              "status": ["ok"], "reason": [""], "prompt_words": [prompt_words_to_json(prompt_words)],
                              "spoken_words": [prompt_words_to_json(spoken)], "spoken_subject": ["[0, 20]"]})
    frames = [u % 500 for u in range(150)]  # 6 s, every frame a unit of its own
    units = pd.DataFrame([units_row(7, Units(frames, frames, [1] * 150, 150, [150]))])
    args = (records, records, manifest, None, alignment, units, "tts", tok)
    t = prompt_table(*args).iloc[0]
    assert t["status"] == "ok", t["reason"]
    text = "".join(t["text_tokens"]).replace("▁", " ")
    assert t["token_rows"] == "spoken" and t["pause_owner"] == "none" and text == SPOKEN == t["spoken_text"]
    assert "".join(t["text_tokens"][: t["subject_token_end"]]).replace("▁", " ") == "The nineteen sixties"
    # silence: frames [0, 15) before 0.60 s and [126, 150) after 5.04 s; pauses: frames 27-29 (1.08-1.20 s) and
    # 81-104 (3.24-4.20 s)
    assert (t["lead_silence_units"], t["pause_units"], t["trail_silence_units"]) == (15, 3 + 24, 24)
    assert (t["pos_start"], t["pos_end"], t["subject_units"]) == (3 + 15, 3 + 81, 81 - 15 - 3)
    p = prompt_table(*args, token_rows="prompt").iloc[0]
    assert p["status"] == "ok" and p["token_rows"] == "prompt"
    assert "".join(p["text_tokens"]).replace("▁", " ") == PROMPT
    assert list(p["text_tokens"][3:9]) == ["▁", "1", "9", "6", "0", "s"]  # digits: tokens of their own
    assert p["pause_units"] == 3 + 24  # the same pauses: after "The" and after "1960s"
    pre = prompt_table(*args, pause_owner="preceding").iloc[0]
    assert pre["pause_units"] == 0 and pre["pos_end"] - pre["pos_start"] == pre["subject_units"] == 105 - 15
    # an alignment table from before spoken_words existed: a quarantined row that says what to do
    old = prompt_table(records, records, manifest, None, alignment.drop(columns=["spoken_words", "spoken_subject"]),
                       units, "tts", tok).iloc[0]
    assert old["status"] == "quarantined" and "re-run the align rule" in old["reason"]
    # over 100 s the units table's chunk layout decides the frames: the same words at 100 s, in chunk 1
    late = [PromptWord(w.word, w.char_start, w.char_end, w.start_s + 100.0, w.end_s + 100.0) for w in spoken]
    runs = [2499] + [1] * 150  # chunk 0 (2499 frames) is one long unit; chunk 1 as above
    u_long = pd.DataFrame([units_row(7, Units([7] * 2499 + frames, [7] + frames, runs, 2649, [2499, 150]))])
    lt = prompt_table(records, records, manifest, None, alignment.assign(spoken_words=[prompt_words_to_json(late)]),
                      u_long, "tts", tok).iloc[0]
    assert lt["status"] == "ok" and json.loads(u_long["chunk_frames"].iloc[0]) == [2499, 150]
    assert [u - 1 for u in lt["token_unit_start"]] == list(t["token_unit_start"])  # as at 0 s, one unit later
    assert (lt["lead_silence_units"], lt["pause_units"]) == (16, 27)


def test_tts_spoken_words_share_a_prompt_words_span_by_letters():
    norm = normalize_for_ctc(PROMPT)
    pw = [PromptWord("The", 0, 3, 0.20, 0.36), PromptWord("1960s", 4, 9, 0.40, 1.15),
          PromptWord("began", 10, 15, 1.40, 1.60), PromptWord("in", 16, 18, 1.60, 1.68)]
    segs = spoken_from_prompt_words(norm, pw)
    # NINETEEN (8 letters) and SIXTIES (7) share 1960s's 0.75 s: 0.40 s and 0.35 s
    assert [(s.word, round(s.start_s, 9), round(s.end_s, 9)) for s in segs[1:3]] == [
        ("NINETEEN", 0.40, 0.80), ("SIXTIES", 0.80, 1.15)]
    placed = spoken_words_placed(norm, segs, letter_starts=[[0.2, 0.25, 0.3]] + [[np.nan] * len(w) for w in norm.words[1:]])
    assert [w.word for w in placed] == ["The", "nineteen", "sixties", "began", "in"]
    assert placed[0].anchors == ((0, 0.2), (1, 0.25), (2, 0.3)) and placed[1].anchors == ()


def test_comparison_says_which_rows_it_pairs(tmp_path):
    """The paired T→T/S→T comparison pairs (prompt, kind, category, layer) cells and says what the S→T rows
    are; a prompt enters a cell only where both runs have the category (spoken rows may lack one)."""
    from crosstrace.report.compare import compare_runs, run_token_rows, token_rows_note
    from crosstrace.report.stats import aie_table

    def cat(modality, rows, cats):
        return pd.DataFrame([dict(model="m", modality=modality, known_id=k, kind="hidden", category=c, layer=0,
                                  ie=0.1 * k + (0.05 if modality == "t2t" else 0.0), answer_mode="top1", token_rows=rows)
                             for k in range(4) for c in cats[k]])

    # prompt 3 has a middle subject token in T→T only ("1960s" → ▁ 1 9 6 0 s; spoken "nineteen" → one token)
    t2t = cat("t2t", None, [["first_subject", "last"]] * 3 + [["first_subject", "middle_subject", "last"]])
    s2t = cat("s2t", "spoken", [["first_subject", "last"]] * 4)
    both = pd.concat([t2t, s2t], ignore_index=True)
    stats = {"n_perm": 50, "seed": 0, "alpha": 0.05, "n_boot": 20, "level": 0.9, "category_mean": "per_prompt"}
    aie = aie_table(both, n_boot=20, category_mean="per_prompt")
    c = compare_runs(both, aie, ("m", "t2t"), ("m", "s2t"), ["hidden"], stats)
    assert c.token_rows == (None, "spoken") and run_token_rows(both, ("m", "s2t")) == "spoken"
    assert set(c.table["category"]) == {"first_subject", "last"}  # middle_subject: in one run only, no pair
    assert (c.table["n"] == 4).all() and c.table["diff"].tolist() == pytest.approx([0.05, 0.05])
    summary = c.summary()
    assert summary["b"]["token_rows"] == "spoken" and summary["a"]["token_rows"] is None
    assert "spoken text tokens" in summary["pairing"] and "the paper" in summary["pairing"]
    assert "token-for-token" in token_rows_note((None, "prompt"))
    with pytest.raises(ValueError, match="mixes S→T token rows"):
        run_token_rows(pd.concat([s2t, s2t.assign(token_rows="prompt")]), ("m", "s2t"))


def test_similarity_pairs_the_end_of_the_subject_and_says_which_rows(ckpt):
    """The similarity rule's subject position in S→T is the last unit of the subject's last text token (ties:
    u7, LM 10), never a pause unit, and the matched states record the S→T rows they came from."""
    from crosstrace.config import ModelSpec
    from crosstrace.models.family import load, prepare
    from crosstrace.representations import matched_states

    spec = ModelSpec.from_dict({"name": "tiny-spirit", "family": "spiritlm", "path": str(ckpt["root"]),
                                "modalities": ["t2t", "s2t"]})
    spec = replace(spec, resolved=prepare(spec), dtype="float32")
    lm = load(spec)
    t2t = {"known_id": 7, "prompt": PROMPT, "subject": SUBJECT}
    got = matched_states(lm.model, lm.tokenizer, spec, [(t2t, _known_row())])
    pos = got.positions.iloc[0]
    # T→T: <s> ▁ [Text] T h e ▁ 1 9 6 0 s ▁began ▁in -> the subject ends with "s" at 11
    assert (pos["s2t_subject"], pos["s2t_last"], pos["t2t_subject"]) == (10, 16, 11) and got.token_rows == "spoken"
    got = matched_states(lm.model, lm.tokenizer, spec, [(t2t, {**_known_row("preceding"), "token_rows": "prompt"})])
    assert got.token_rows == "prompt" and got.positions.iloc[0]["s2t_subject"] == 12  # u9, the pause is ties' now
