"""SpiritLM T→T / S→T wiring (crosstrace.modality): ids, spans, noise basis, tables, tracing."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from crosstrace.config import ModelSpec
from crosstrace.modality import for_run
from crosstrace.models.family import check_spiritlm_root, load, prepare
from crosstrace.models.hubert import Units
from crosstrace.models.loading import ModelLoadError
from crosstrace.spans import SpanError
from crosstrace.speech.align import PromptWord
from crosstrace.speech.pipeline import prompt_words_to_json
from crosstrace.speech.prompts import (
    prompt_table,
    row_prompt,
    subject_positions,
    subject_unit_ids,
    token_maps,
)
from crosstrace.speech.units import token_unit_ranges, units_row
from crosstrace.trace import NoiseConfig, Tracer, TraceSettings
from crosstrace.trace.noise import embedding_std

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(ckpt):
    return ckpt["root"]


@pytest.fixture(scope="module")
def spec(root):
    s = ModelSpec.from_dict({"name": "tiny-spirit", "family": "spiritlm", "path": str(root), "modalities": ["t2t", "s2t"]})
    return replace(s, resolved=prepare(s))


@pytest.fixture(scope="module")
def lm(spec):
    return load(replace(spec, dtype="float32"))


# Hand-built utterance: frames u = [5,5,7,7,7,9,9,5,5,5] at 25 Hz -> dedup [5,7,9,5], runs [2,3,2,3].
FRAMES = [5, 5, 7, 7, 7, 9, 9, 5, 5, 5]
UNITS = Units(FRAMES, [5, 7, 9, 5], [2, 3, 2, 3], 10)


def test_row_prompt_hand_computed():
    """A known-table row → S→T ids and subject span, the path tracing, Known-s2t and the noise basis read."""
    # one text token at 0.10..0.22 s: eq. 2 frames [floor(2.5), ceil(5.5)) = [2, 6) -> runs 1 (frames 2-4) and
    # 2 (frame 5) -> units [1, 3)
    tu = token_unit_ranges([0.10], [0.22], UNITS.run_lengths)
    assert (tu.unit_start, tu.unit_end, tu.lead, tu.trail) == ([1], [3], 1, 1)
    row = {"status": "ok", "dedup": UNITS.dedup, "subject_token_start": 0, "subject_token_end": 1,
           "token_unit_start": tu.unit_start, "token_unit_end": tu.unit_end, "pos_start": 4, "pos_end": 6}
    ids, span = row_prompt(row)
    assert ids == [1, 29871, 32001, 32007, 32009, 32011, 32007, 32000]  # the reference's stray ▁ by default
    assert span == (4, 6) and ids[4:6] == [32009, 32011]  # [Hu7][Hu9]
    assert subject_positions(row) == [4, 5] and subject_unit_ids([row]) == [[32009, 32011]]
    # without the stray ▁ (a deviation) everything moves back by one, and a table built with it is refused
    ids, span = row_prompt({**row, "pos_start": 3, "pos_end": 5}, stray_space=False)
    assert ids[:2] == [1, 32001] and span == (3, 5)
    with pytest.raises(SpanError, match="another stray_space"):
        row_prompt(row, stray_space=False)


def _tables():
    records = pd.DataFrame({"known_id": [0, 1, 2, 3, 4], "subject": ["A", "B", "C", "D", "E"],
                            "attribute": ["x"] * 5, "prompt": ["A is", "B is", "C is", "D is", "E is"]})
    speech = records[records["known_id"] < 4]
    manifest = pd.DataFrame({"known_id": [0, 1, 2, 3], "path": ["a.wav", "b.wav", "", "d.wav"],
                             "duration_s": [0.4, 0.4, 0.0, 0.4], "status": ["ok", "ok", "quarantined", "ok"],
                             "reason": ["", "", "known_id=2: too short", ""]})
    qc = pd.DataFrame({"known_id": [0, 1, 3], "wer": [0.0, 0.9, 0.0], "passes_qc": [True, False, True]})
    # word times: "A is": A [0.10, 0.22), is [0.22, 0.36); "B is": B [0.0, 0.08), is [0.08, 0.30)
    words = {0: [PromptWord("A", 0, 1, 0.10, 0.22), PromptWord("is", 2, 4, 0.22, 0.36)],
             1: [PromptWord("B", 0, 1, 0.0, 0.08), PromptWord("is", 2, 4, 0.08, 0.30)],
             3: [PromptWord("D", 0, 1, 0.0, 0.1), PromptWord("is", 2, 4, 0.1, 0.2)]}
    alignment = pd.DataFrame({"known_id": [0, 1, 3, 0], "aligner": ["tts", "tts", "tts", "whisper"],
                              "subject_start_s": [0.10, 0.0, 0.0, 0.3], "subject_end_s": [0.22, 0.01, 0.1, 0.4],
                              "status": ["ok", "ok", "ok", "ok"], "reason": ["", "", "", ""],
                              "prompt_words": [prompt_words_to_json(words[k]) for k in (0, 1, 3)] + [None]})
    # "A is" has no digit or symbol: its spoken text is the prompt itself, and the subject is character 0
    alignment["spoken_words"] = alignment["prompt_words"]
    alignment["spoken_subject"] = ["[0, 1]"] * 3 + [None]
    units = pd.DataFrame([units_row(0, UNITS), units_row(1, UNITS), units_row(3, error="zero units")])
    return records, speech, manifest, qc, alignment, units


def test_s2t_table_labels_every_record(lm, spec):
    t = prompt_table(*_tables(), "tts", lm.tokenizer).set_index("known_id")
    assert list(t.index) == [0, 1, 2, 3, 4]  # nothing dropped
    # units (runs [2,3,2,3]) cover 0-.08, .08-.20, .20-.28, .28-.40 s: A [.10,.22) owns unit 1 (its .10 s beats
    # the .02 s it has of unit 2), "is" units 2-3; unit 0 is leading silence. With [BOS, ▁, [Speech]]: LM 4..5
    assert t.loc[0, "status"] == "ok" and (t.loc[0, "pos_start"], t.loc[0, "pos_end"]) == (4, 5)
    assert list(t.loc[0, "text_tokens"]) == ["A", "▁is"] and (t.loc[0, "subject_token_start"], t.loc[0, "subject_token_end"]) == (0, 1)
    assert list(t.loc[0, "token_unit_start"]) == [1, 2] and list(t.loc[0, "token_unit_end"]) == [2, 4]
    assert (t.loc[0, "lead_silence_units"], t.loc[0, "trail_silence_units"]) == (1, 0)
    assert (t.loc[0, "subject_start_s"], t.loc[0, "subject_end_s"]) == (0.10, 0.22)
    assert t.loc[1, "status"] == "ok" and not t.loc[1, "passes_qc"]  # QC failure kept, labelled
    assert (t.loc[2, "status"], t.loc[2, "stage"]) == ("quarantined", "synthesize")
    assert (t.loc[3, "status"], t.loc[3, "stage"]) == ("quarantined", "units")
    assert (t.loc[4, "status"], t.loc[4, "stage"]) == ("quarantined", "speech")
    assert all(t.loc[k, "reason"].startswith(f"known_id={k}:") for k in (2, 3, 4))


def test_s2t_noise_std_is_direct_computation(lm, spec):
    t = prompt_table(*_tables(), "tts", lm.tokenizer)
    ids = subject_unit_ids(t.to_dict("records"))
    assert ids == [[32009], [32007]]  # the subject's units: [Hu7] (known_id 0), [Hu5] (known_id 1)
    w = lm.model.get_input_embeddings().weight.double()
    direct = torch.cat([w[32009], w[32007]]).std().item()
    assert embedding_std(lm.model.get_input_embeddings(), ids) == pytest.approx(direct, rel=1e-12)


def test_t2t_spiritlm_span_apples(lm, spec):
    enc = for_run(spec, "t2t", lm.tokenizer).encode("Apple's city is in France", "Apple")
    assert enc.input_ids[:3] == [1, 29871, 32000]  # the reference's ids by default
    toks = lm.tokenizer.convert_ids_to_tokens(enc.input_ids)
    b, e = enc.subject_span
    assert b == 3 and "".join(toks[b:e]).replace("▁", "") == "Apple"
    enc = for_run(replace(spec, stray_space=False), "t2t", lm.tokenizer).encode("Apple's city is in France", "Apple")
    assert enc.input_ids[:2] == [1, 32000] and enc.subject_span[0] == 2


def test_trace_s2t_row_positions_inside_units(lm, spec):
    t = prompt_table(*_tables(), "tts", lm.tokenizer)
    row = t[t["known_id"] == 0].iloc[0].to_dict()
    settings = TraceSettings(kinds=("hidden",), window=2, noise=NoiseConfig(samples=2))
    tracer = Tracer(lm.model, lm.tokenizer, settings, 0.1)
    tr = for_run(spec, "s2t", lm.tokenizer).trace(tracer, row)
    assert tr.subject_span == (4, 5) and tr.input_ids[:3] == [1, 29871, 32001]
    assert tr.tokens[2:5] == ["[Speech]", "[Hu5]", "[Hu7]"] and tr.tokens[-1] == "[Text]"
    # the trace aggregates onto the row's text tokens: A, ▁is, [Text]
    from crosstrace.trace.tables import aggregate_by_text_tokens, trace_rows

    agg, q = aggregate_by_text_tokens(trace_rows(tr, tracer, "m", "s2t"), token_maps(t))
    assert q.empty and agg.drop_duplicates("token_index")["token"].tolist() == ["A", "▁is", "[Text]"]
    raw = tr.kinds["hidden"].ie
    got = agg.sort_values(["token_index", "layer"])["ie"].to_numpy().reshape(3, -1)
    np.testing.assert_allclose(got, np.stack([raw[4], raw[5:7].mean(0), raw[7]]), rtol=0, atol=1e-12)


def test_s2t_table_quarantines_tokens_with_reasons(lm, spec):
    records, speech, manifest, qc, alignment, units = _tables()
    # whisper lost "is"; the subject "B" placed after the end of the 0.4 s audio
    for col in ("prompt_words", "spoken_words"):  # the spoken text of "A is" is the prompt itself
        alignment.loc[0, col] = prompt_words_to_json([PromptWord("A", 0, 1, 0.10, 0.22),
                                                      PromptWord("is", 2, 4, math.nan, math.nan)])
        alignment.loc[1, col] = prompt_words_to_json([PromptWord("B", 0, 1, 0.5, 0.6), PromptWord("is", 2, 4, 0.6, 0.7)])
    t = prompt_table(records, speech, manifest, qc, alignment, units, "tts", lm.tokenizer).set_index("known_id")
    assert (t.loc[0, "status"], t.loc[0, "stage"]) == ("quarantined", "tokens")
    assert "could not place the word 'is'" in t.loc[0, "reason"]
    assert t.loc[1, "stage"] == "tokens" and "the units do not cover the subject" in t.loc[1, "reason"]
    assert t.loc[1, "reason"].startswith("known_id=1:")


def test_attribute_answer_is_the_text_after_the_prompt_in_both_modalities(lm, spec):
    ids = for_run(spec, "t2t", lm.tokenizer).answer_ids({"prompt": "Apple's city is in", "attribute": "France"})
    assert "".join(lm.tokenizer.convert_ids_to_tokens(ids)) == "▁France"  # the word after a space
    t = prompt_table(*_tables(), "tts", lm.tokenizer)
    row = t[t["known_id"] == 0].iloc[0].to_dict()  # prompt "A is", attribute "x"
    settings = TraceSettings(kinds=("hidden",), window=2, noise=NoiseConfig(samples=2), answer="attribute_full")
    tracer = Tracer(lm.model, lm.tokenizer, settings, 0.1)
    s2t = for_run(spec, "s2t", lm.tokenizer).trace(tracer, row)
    t2t = for_run(spec, "t2t", lm.tokenizer).trace(tracer, row)
    expected = tuple(for_run(spec, "t2t", lm.tokenizer).answer_ids({"prompt": "A is", "attribute": "x"}))
    assert s2t.answer_ids == t2t.answer_ids == expected and s2t.answer_mode == "attribute_full"
    assert s2t.kinds["hidden"].p_restored.shape[0] == len(s2t.input_ids)  # the grid: the spoken prompt only
    with pytest.raises(SpanError, match="no attribute"):
        for_run(spec, "s2t", lm.tokenizer).trace(tracer, {**row, "attribute": None})


def test_missing_checkpoint_files_named(tmp_path, root):
    with pytest.raises(ModelLoadError, match="spirit-lm-base-7b"):
        check_spiritlm_root(tmp_path / "nowhere")
    # LM present but no speech tokenizer: s2t names the missing file
    import shutil

    part = tmp_path / "part"
    shutil.copytree(root / "spiritlm_model", part / "spiritlm_model")
    check_spiritlm_root(part, ["t2t"])
    with pytest.raises(ModelLoadError, match="mhubert_base_25hz.pt"):
        check_spiritlm_root(part, ["t2t", "s2t"])
