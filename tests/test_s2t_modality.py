"""SpiritLM T→T / S→T wiring (crosstrace.modality): ids, spans, noise basis, tables, tracing."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from crosstrace.modality import (
    check_spiritlm_root,
    encode_s2t,
    encode_t2t,
    load_any,
    prepare_any,
    s2t_subject_embedding_ids,
    s2t_table,
    trace_one_fn,
    units_row,
)
from crosstrace.models.hubert import Units
from crosstrace.models.loading import ModelLoadError
from crosstrace.speech.units import UnitSpanError
from crosstrace.trace import NoiseConfig, Tracer, TraceSettings
from crosstrace.trace.noise import embedding_std
from crosstrace.trace.tokens import SpanError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(ckpt):
    return ckpt["root"]


@pytest.fixture(scope="module")
def spec(root):
    s = {"name": "tiny-spirit", "family": "spiritlm", "path": str(root), "modalities": ["t2t", "s2t"]}
    return {**s, "resolved": prepare_any(s)}


@pytest.fixture(scope="module")
def lm(spec):
    return load_any({**spec, "dtype": "float32"})


# Hand-built utterance: frames u = [5,5,7,7,7,9,9,5,5,5] at 25 Hz -> dedup [5,7,9,5], runs [2,3,2,3].
FRAMES = [5, 5, 7, 7, 7, 9, 9, 5, 5, 5]
UNITS = Units(FRAMES, [5, 7, 9, 5], [2, 3, 2, 3], 10)


def test_encode_s2t_hand_computed():
    # subject 0.10..0.22 s: frames [floor(2.5), ceil(5.5)) = [2, 6) -> runs 1 (frames 2-4) .. 2 (frame 5) -> dedup [1, 3)
    ids, span = encode_s2t(UNITS.dedup, UNITS.run_lengths, 0.10, 0.22, UNITS.n_frames)
    assert ids == [1, 32001, 32007, 32009, 32011, 32007, 32000]
    assert (span.frame_start, span.frame_end) == (2, 6)
    assert (span.dedup_start, span.dedup_end) == (1, 3)
    assert span.offset == 2 and span.positions == (3, 5)
    assert ids[3:5] == [32009, 32011]  # [Hu7][Hu9]
    # with the stray ▁ everything moves by one
    ids, span = encode_s2t(UNITS.dedup, UNITS.run_lengths, 0.10, 0.22, UNITS.n_frames, stray_space=True)
    assert ids[:3] == [1, 29871, 32001] and span.positions == (4, 6)
    # a run crossing the edge counts as inside: 0.0..0.01 s -> frame [0, 1) -> dedup [0, 1)
    assert encode_s2t(UNITS.dedup, UNITS.run_lengths, 0.0, 0.01)[1].positions == (2, 3)
    with pytest.raises(UnitSpanError):
        encode_s2t(UNITS.dedup, UNITS.run_lengths, 1.0, 2.0, 10)  # outside the 0.4 s utterance


def _tables():
    records = pd.DataFrame({"known_id": [0, 1, 2, 3, 4], "subject": ["A", "B", "C", "D", "E"],
                            "attribute": ["x"] * 5, "prompt": ["A is", "B is", "C is", "D is", "E is"]})
    speech = records[records["known_id"] < 4]
    manifest = pd.DataFrame({"known_id": [0, 1, 2, 3], "path": ["a.wav", "b.wav", "", "d.wav"],
                             "duration_s": [0.4, 0.4, 0.0, 0.4], "status": ["ok", "ok", "quarantined", "ok"],
                             "reason": ["", "", "known_id=2: too short", ""]})
    qc = pd.DataFrame({"known_id": [0, 1, 3], "wer": [0.0, 0.9, 0.0], "passes_qc": [True, False, True]})
    alignment = pd.DataFrame({"known_id": [0, 1, 3, 0], "aligner": ["tts", "tts", "tts", "whisper"],
                              "subject_start_s": [0.10, 0.0, 0.0, 0.3], "subject_end_s": [0.22, 0.01, 0.1, 0.4],
                              "status": ["ok", "ok", "ok", "ok"], "reason": ["", "", "", ""]})
    units = pd.DataFrame([units_row(0, UNITS), units_row(1, UNITS), units_row(3, error="zero units")])
    return records, speech, manifest, qc, alignment, units


def test_s2t_table_labels_every_record():
    t = s2t_table(*_tables(), aligner="tts").set_index("known_id")
    assert list(t.index) == [0, 1, 2, 3, 4]  # nothing dropped
    assert t.loc[0, "status"] == "ok" and (t.loc[0, "pos_start"], t.loc[0, "pos_end"]) == (3, 5)
    assert t.loc[1, "status"] == "ok" and not t.loc[1, "passes_qc"]  # QC failure kept, labelled
    assert (t.loc[2, "status"], t.loc[2, "stage"]) == ("quarantined", "synthesize")
    assert (t.loc[3, "status"], t.loc[3, "stage"]) == ("quarantined", "units")
    assert (t.loc[4, "status"], t.loc[4, "stage"]) == ("quarantined", "speech")
    assert all(t.loc[k, "reason"].startswith(f"known_id={k}:") for k in (2, 3, 4))


def test_s2t_noise_std_is_direct_computation(lm):
    t = s2t_table(*_tables(), aligner="tts")
    ids = s2t_subject_embedding_ids(t.to_dict("records"))
    assert ids == [[32009, 32011], [32007]]
    w = lm.model.get_input_embeddings().weight.double()
    direct = torch.cat([w[32009], w[32011], w[32007]]).std().item()
    assert embedding_std(lm.model.get_input_embeddings(), ids) == pytest.approx(direct, rel=1e-12)


def test_t2t_spiritlm_span_apples(lm, spec):
    enc = encode_t2t(spec, lm.tokenizer, "Apple's city is in France", "Apple")
    assert enc.input_ids[:2] == [1, 32000]
    toks = lm.tokenizer.convert_ids_to_tokens(enc.input_ids)
    b, e = enc.subject_span
    assert b == 2 and "".join(toks[b:e]).replace("▁", "") == "Apple"
    enc = encode_t2t({**spec, "stray_space": True}, lm.tokenizer, "Apple's city is in France", "Apple")
    assert enc.input_ids[:3] == [1, 29871, 32000] and enc.subject_span[0] == 3


def test_trace_s2t_row_positions_inside_units(lm, spec):
    t = s2t_table(*_tables(), aligner="tts")
    row = t[t["known_id"] == 0].iloc[0].to_dict()
    settings = TraceSettings(kinds=("hidden",), window=2, noise=NoiseConfig(samples=2))
    tracer = Tracer(lm.model, lm.tokenizer, settings, 0.1)
    tr = trace_one_fn(spec, tracer, "s2t")(row)
    assert tr.subject_span == (3, 5) and tr.input_ids[:2] == [1, 32001]
    assert tr.tokens[:4] == [tr.tokens[0], "[Speech]", "[Hu5]", "[Hu7]"] and tr.tokens[-1] == "[Text]"


def test_attribute_answer_is_the_text_after_the_prompt_in_both_modalities(lm, spec):
    from crosstrace.modality import attribute_ids_t2t

    ids = attribute_ids_t2t(spec, lm.tokenizer, "Apple's city is in", "France")
    assert "".join(lm.tokenizer.convert_ids_to_tokens(ids)) == "▁France"  # the word after a space
    t = s2t_table(*_tables(), aligner="tts")
    row = t[t["known_id"] == 0].iloc[0].to_dict()  # prompt "A is", attribute "x"
    settings = TraceSettings(kinds=("hidden",), window=2, noise=NoiseConfig(samples=2), answer="attribute_full")
    tracer = Tracer(lm.model, lm.tokenizer, settings, 0.1)
    s2t = trace_one_fn(spec, tracer, "s2t")(row)
    t2t = trace_one_fn(spec, tracer, "t2t")(row)
    expected = tuple(attribute_ids_t2t(spec, lm.tokenizer, "A is", "x"))
    assert s2t.answer_ids == t2t.answer_ids == expected and s2t.answer_mode == "attribute_full"
    assert s2t.kinds["hidden"].p_restored.shape[0] == len(s2t.input_ids)  # the grid: the spoken prompt only
    with pytest.raises(SpanError, match="no attribute"):
        trace_one_fn(spec, tracer, "s2t")({**row, "attribute": None})


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
