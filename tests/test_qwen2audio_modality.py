"""Qwen2-Audio through the modality objects (crosstrace.modality) on the tiny random model: the S→T prompt table
from the speech chain's tables (hand-checked positions, template tokens after the audio), tracing from the
merged input embeddings, aggregation to text tokens, the noise basis, Known-s2t decoded from embeddings against
transformers' own generate, the audio-position step, bad inputs and the config rules."""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from qwen2audio_fixture import tone_clip
from snakemake.utils import validate

from crosstrace.audio import write_wav16
from crosstrace.config import FAMILIES, ConfigError, ModelSpec, check
from crosstrace.modality import for_run, noise_std
from crosstrace.models.family import load, prepare
from crosstrace.models.loading import ModelLoadError
from crosstrace.models.speech_family import input_embeddings, speech_family
from crosstrace.speech.align import PromptWord
from crosstrace.speech.pipeline import prompt_words_to_json
from crosstrace.speech.units import encode_clip
from crosstrace.steps import prepare_model
from crosstrace.trace import NoiseConfig, Tracer, TraceSettings
from crosstrace.trace.noise import vectors_std
from crosstrace.trace.tables import aggregate_by_text_tokens, category_table, trace_rows, unit_view

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
PROMPTS = {0: ("The capital of France is", "France", "Paris"), 1: ("Vinson Massif is located in", "Vinson Massif", "Antarctica")}
# word times on the 25 Hz grid (multiples of 0.04 s): eq. 2 gives each word exactly the frames [t0·25, t1·25)
WORDS = {
    0: [("The", 0.12, 0.32), ("capital", 0.32, 0.80), ("of", 0.80, 0.92), ("France", 0.96, 1.48), ("is", 1.48, 1.64)],
    1: [("Vinson", 0.08, 0.48), ("Massif", 0.60, 1.00), ("is", 1.00, 1.12), ("located", 1.12, 1.52), ("in", 1.52, 1.64)],
}
SECONDS = {0: 2.0, 1: 1.8}


def _spec(path, **kw) -> ModelSpec:
    spec = ModelSpec.from_dict({"name": "tiny-qwen2-audio", "family": "qwen2-audio", "path": str(path),
                                "modalities": ["t2t", "s2t"], **kw})
    return replace(spec, resolved=prepare(spec))


@pytest.fixture(scope="module")
def spec(qwen2audio_dir):
    return _spec(qwen2audio_dir)


@pytest.fixture(scope="module")
def lm(spec):
    return load(spec)


@pytest.fixture(scope="module")
def suffix(qwen2audio_dir):
    """The same model with text after the prompt slot: S→T ends ``<|audio_eos|> The answer is``."""
    return load(_spec(qwen2audio_dir, template={"text": "{prompt} The answer is", "audio": None, "chat": False}))


def _words(kid: int) -> list[PromptWord]:
    out, c = [], 0
    for w, t0, t1 in WORDS[kid]:
        out.append(PromptWord(w, c, c + len(w), t0, t1))
        c += len(w) + 1
    return out


@pytest.fixture(scope="module")
def tables(tmp_path_factory, spec):
    """The speech chain's tables for two prompts (and a third not selected for speech), and the units table
    written by the family's own input step (audio positions counted from the processor)."""
    d = tmp_path_factory.mktemp("clips")
    records = pd.DataFrame([{"known_id": k, "prompt": p, "subject": s, "attribute": a} for k, (p, s, a) in PROMPTS.items()]
                           + [{"known_id": 2, "prompt": "Apple A5 is made by", "subject": "Apple A5", "attribute": "Apple"}])
    paths = {k: str(d / f"{k}.wav") for k in SECONDS}
    for k, sec in SECONDS.items():
        write_wav16(paths[k], tone_clip(sec, seed=k))
    manifest = pd.DataFrame({"known_id": [0, 1], "path": [paths[0], paths[1]], "duration_s": [2.0, 1.8],
                             "status": ["ok", "ok"], "reason": ["", ""]})
    alignment = pd.DataFrame({"known_id": [0, 1], "aligner": ["tts", "tts"], "status": ["ok", "ok"], "reason": ["", ""],
                              "subject_start_s": [0.96, 0.08], "subject_end_s": [1.48, 1.00],
                              "prompt_words": [prompt_words_to_json(_words(k)) for k in (0, 1)]})
    alignment["spoken_words"] = alignment["prompt_words"]  # no digits or symbols: the spoken text is the prompt
    alignment["spoken_subject"] = ["[15, 21]", "[0, 13]"]
    encoder = speech_family("qwen2-audio").speech_encoder(spec)
    units = pd.DataFrame([encode_clip(encoder, SimpleNamespace(known_id=k, status="ok", reason="", path=paths[k]))
                          for k in (0, 1)])
    return SimpleNamespace(records=records, speech=records[records["known_id"] < 2], manifest=manifest, qc=None,
                           alignment=alignment, units=units, dir=d)


def _table(mod, t, **kw):
    return mod.prompt_table(t.records, t.speech, t.manifest, t.qc, t.alignment, t.units, "tts", **kw)


def _tracer(lm, **kw) -> Tracer:
    return Tracer(lm.model, lm.tokenizer, TraceSettings(kinds=("hidden", "mlp"), window=2,
                                                        noise=NoiseConfig(samples=2), **kw), noise_std=0.5)


# ---------------------------------------------------------------------------------------------- prompt table


def test_audio_position_step_counts_positions_without_the_model(tables):
    """2.0 s = 32 000 samples → 200 mel frames → (200 − 1) // 2 + 1 = 100 → (100 − 2) // 2 + 1 = 50 positions;
    1.8 s → 180 → 90 → 45. One position per run, no units."""
    u = tables.units.set_index("known_id")
    assert list(u["n_frames"]) == [50, 45] and (u["status"] == "ok").all()
    assert [list(r) for r in u["run_lengths"]] == [[1] * 50, [1] * 45] and all(len(x) == 0 for x in u["dedup"])


def test_prompt_table_positions_by_hand(lm, tables):
    t = _table(for_run(lm_spec(lm), "s2t", lm), tables).set_index("known_id")
    assert (t.loc[2, "status"], t.loc[2, "stage"]) == ("quarantined", "speech")  # every record keeps a row
    r = t.loc[0]
    assert r["status"] == "ok" and list(r["text_tokens"]) == ["The", "Ġcapital", "Ġof", "ĠFr", "an", "ce", "Ġis"]
    # The [.12,.32) → frames [3, 8); capital [.32,.80) → [8, 20); of [.80,.92) → [20, 23); position 23 is the pause
    # .92-.96; France [.96, 1.48) by letters: Fr [24, 28), an [28, 33), ce [33, 37) (positions 28 and 32 touch two
    # tokens and go to the one that covers more of them); is [1.48, 1.64) → [37, 41)
    assert list(r["token_unit_start"]) == [3, 8, 20, 24, 28, 33, 37]
    assert list(r["token_unit_end"]) == [8, 20, 23, 28, 33, 37, 41]
    assert (r["unit_offset"], r["n_units"], list(r["tail_tokens"])) == (1, 50, ["<|audio_eos|>"])  # after <|audio_bos|>
    assert (r["subject_token_start"], r["subject_token_end"], r["pos_start"], r["pos_end"]) == (3, 6, 25, 38)
    assert (r["lead_silence_units"], r["pause_units"], r["trail_silence_units"]) == (3, 1, 9)
    # Vinson Massif: a pause between the subject's words (.48-.60, positions 12..14) belongs to no token
    r = t.loc[1]
    assert (r["pos_start"], r["pos_end"], r["pause_units"]) == (3, 26, 3)
    s2t = for_run(lm_spec(lm), "s2t", lm)
    row = r.to_dict() | {"known_id": 1}
    assert s2t.subject_positions(row) == [p for p in range(3, 26) if p not in (13, 14, 15)]
    eps = s2t.noise(_tracer(lm), row, (3, 26))  # the pause positions stay clean, the rest is the seeded draw
    assert eps.abs().sum(-1)[:, 10:13].eq(0).all() and eps.abs().sum(-1)[:, [0, 9, 13, 22]].gt(0).all()


def test_the_row_switches_work_as_for_spiritlm(lm, tables):
    """speech.token_rows: prompt gives the T→T template's own tokens of the prompt; speech.pause_owner: preceding
    gives the pause after a word to that word (here the .92-.96 s pause after "of" and the one in "Vinson Massif")."""
    s2t = for_run(lm_spec(lm), "s2t", lm)
    t = _table(s2t, tables, token_rows="prompt", pause_owner="preceding").set_index("known_id")
    for kid in (0, 1):
        prompt, subject, _ = PROMPTS[kid]
        enc = lm.text_tokens(prompt, subject)
        assert list(t.loc[kid, "text_ids"]) == enc.input_ids and t.loc[kid, "token_rows"] == "prompt"
        assert (t.loc[kid, "subject_token_start"], t.loc[kid, "subject_token_end"]) == enc.subject_span
        assert t.loc[kid, "pause_units"] == 0
    assert list(t.loc[0, "token_unit_end"])[2] == 24  # "of" now ends where "France" starts


def lm_spec(lm) -> ModelSpec:
    return ModelSpec.from_dict({"name": lm.name, "family": "qwen2-audio", "path": "unused", "modalities": ["t2t", "s2t"]})


def test_text_after_the_prompt_slot_gives_rows_of_its_own(suffix, tables):
    s2t = for_run(lm_spec(suffix), "s2t", suffix)
    r = _table(s2t, tables).set_index("known_id").loc[0].to_dict() | {"known_id": 0}
    tail = ["<|audio_eos|>", *suffix.tokenizer.tokenize(" The answer is")]
    assert list(r["tail_tokens"]) == tail and len(tail) > 2  # the template's tokens after the audio
    tr = s2t.trace(_tracer(suffix), r)
    assert len(tr.input_ids) == 1 + 50 + len(tail) and tr.subject_span == (25, 38)
    rows, q = aggregate_by_text_tokens(trace_rows(tr, _tracer(suffix), "m", "s2t"), _maps(r))
    assert q.empty
    names = rows.drop_duplicates("token_index").sort_values("token_index")["token"].tolist()
    assert names == [*r["text_tokens"], *tail]
    # categories over those rows: <|audio_eos|> and the suffix are "further" tokens, the suffix's last is "last"
    cats = category_table(rows).query("kind == 'hidden' and layer == 0").set_index("category")["n_positions"]
    assert cats.to_dict() == {"first_subject": 1, "middle_subject": 1, "last_subject": 1, "first_subsequent": 1,
                              "further": len(tail) - 1, "last": 1}


def _maps(r):
    from crosstrace.speech.prompts import token_map

    return {int(r["known_id"]): token_map(r)}


def test_trace_runs_on_the_merged_embeddings_and_aggregates_to_text_tokens(lm, spec, tables):
    s2t = for_run(spec, "s2t", lm)
    table = _table(s2t, tables)
    r = table.set_index("known_id").loc[0].to_dict() | {"known_id": 0}
    tracer = _tracer(lm)
    tr = s2t.trace(tracer, r)
    inp, span = s2t.lm_input(r)
    # the same trace as the engine fed the family's own merged input embeddings
    ref = tracer.trace_ids(0, inp.input_ids, span, inputs_embeds=lm.inputs_embeds(inp))
    assert tr.p_clean == ref.p_clean and np.array_equal(tr.kinds["hidden"].ie, ref.kinds["hidden"].ie)
    assert tr.tokens[0] == "<|audio_bos|>" and tr.tokens[-1] == "<|audio_eos|>" and span == (25, 38)
    ie = trace_rows(tr, tracer, "m", "s2t")
    rows, q = aggregate_by_text_tokens(ie, _maps(r))
    assert q.empty and rows["token"].drop_duplicates().tolist() == [*r["text_tokens"], "<|audio_eos|>"]
    raw, agg = tr.kinds["hidden"].ie, rows[rows["kind"] == "hidden"].sort_values(["token_index", "layer"])
    got = agg["ie"].to_numpy().reshape(len(r["text_tokens"]) + 1, -1)
    np.testing.assert_allclose(got[3], raw[25:29].mean(0), atol=1e-12)  # Fr = mean of its positions 25..28
    np.testing.assert_allclose(got[-1], raw[51], atol=1e-12)  # <|audio_eos|>, the last token
    view = unit_view(ie, _maps(r))
    regions = view.drop_duplicates("token_index").set_index("token_index")["region"]
    assert regions[0] == "marker" and regions[24] == "pause" and regions[1] == "silence" and regions[51] == "last"


def test_noise_basis_is_the_merged_embeddings_at_the_subjects_positions(lm, spec, tables):
    s2t = for_run(spec, "s2t", lm)
    table = _table(s2t, tables)
    res = noise_std(s2t, table)
    rows = table[table["status"] == "ok"].to_dict("records")
    by_hand = [input_embeddings(lm, s2t.lm_input(r)[0])[s2t.subject_positions(r)] for r in rows]
    assert res["std"] == vectors_std(by_hand) and res["n_subjects"] == 2
    assert res["n_tokens"] == (38 - 25) + (26 - 3 - 3)  # pause positions inside "Vinson Massif" are not the subject's
    t2t = noise_std(for_run(spec, "t2t", lm), tables.records)  # T→T: the subjects' token embeddings (ROME's s3)
    assert t2t["basis"].startswith("subject tokens") and t2t["std"] != res["std"]


def test_known_s2t_decodes_from_embeddings_like_transformers_generate(lm, spec, tables):
    s2t = for_run(spec, "s2t", lm)
    table = _table(s2t, tables)
    one = s2t.label_known(lm.model, table, 4, 1)
    two = s2t.label_known(lm.model, table, 4, 2)  # left-padded embeddings decode as one by one
    assert one["continuation"].tolist() == two["continuation"].tolist()
    assert (one.loc[one["known_id"] == 2, "label"] == "quarantined").all() and len(one) == 3
    # the first prompt with transformers' own Qwen2AudioForConditionalGeneration.generate on ids and features
    inp, _ = s2t.lm_input(table.set_index("known_id").loc[0].to_dict() | {"known_id": 0})
    ids = torch.tensor([inp.input_ids])
    with torch.no_grad():
        out = lm.full.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
                               bad_words_ids=s2t.bad_words(), **inp.features)[0, ids.shape[1]:]
    assert one.set_index("known_id").loc[0, "continuation"] == lm.tokenizer.decode(out, skip_special_tokens=True)
    assert one.set_index("known_id").loc[0, "n_tokens"] == len(inp.input_ids)


def test_near_ties_decode_alone_from_embeddings_as_from_ids(lm, spec, tables):
    """A near-tie is decoded again on its own (crosstrace.filtering.greedy_alone), from the embeddings of a
    continuous S→T prompt as from ids, also by the float64 copy that decides near-ties of small CPU models."""
    from crosstrace.filtering import greedy_alone, greedy_decode, tie_model

    ids = lm.tokenizer(PROMPTS[0][0])["input_ids"]
    x = lm.model.get_input_embeddings().weight[torch.tensor(ids)]
    assert greedy_alone(lm.model, lm.tokenizer, x, 4).ids == greedy_alone(lm.model, lm.tokenizer, ids, 4).ids
    s2t = for_run(spec, "s2t", lm)
    inp, _ = s2t.lm_input(_table(s2t, tables).set_index("known_id").loc[0].to_dict() | {"known_id": 0})
    emb = lm.inputs_embeds(inp)
    batch = greedy_decode(lm.model, lm.tokenizer, [emb], 4, bad_words_ids=s2t.bad_words(), progress=False)[0]
    judge, how = tie_model(lm.model)
    alone = greedy_alone(judge, lm.tokenizer, emb, 4, s2t.bad_words(), how)
    assert how == "float64" and alone.ids == batch.ids and alone.margin == pytest.approx(batch.margin, abs=1e-4)


def test_t2t_uses_the_template_with_the_prompt_text(suffix):
    t2t = for_run(lm_spec(suffix), "t2t", suffix)
    enc = t2t.encode(*PROMPTS[0][:2])
    assert suffix.tokenizer.decode(enc.input_ids) == "The capital of France is The answer is"
    assert t2t.token_labels(enc.input_ids, ["x"] * len(enc.input_ids)) == ["x"] * len(enc.input_ids)
    assert t2t.bad_words() == [[suffix.audio_token_id], [suffix.audio_token_id + 1], [suffix.audio_token_id + 2]]
    tr = t2t.trace(_tracer(suffix), {"known_id": 0, "prompt": PROMPTS[0][0], "subject": "France"})
    assert tr.input_ids == enc.input_ids and tr.subject_span == enc.subject_span


# ------------------------------------------------------------------------------------------------- bad input


def test_long_clip_missing_clip_and_subject_in_padding_are_quarantined(lm, spec, tables):
    """A clip over the encoder's 30 s window is quarantined by the audio-position step (the units table), a clip
    that cannot be read when the input is built, and a subject placed after the last real audio frame (the
    encoder's padding) by the span check: each row keeps its stage and a one-line reason."""
    t = copy.copy(tables)
    long_wav = tables.dir / "long.wav"
    write_wav16(long_wav, np.zeros(31 * 16000, dtype=np.float32))
    encoder = speech_family("qwen2-audio").speech_encoder(spec)
    long_row = encode_clip(encoder, SimpleNamespace(known_id=0, status="ok", reason="", path=str(long_wav)))
    assert long_row["status"] == "quarantined"
    t.units = pd.concat([pd.DataFrame([long_row]), tables.units[tables.units["known_id"] == 1]], ignore_index=True)
    table = _table(for_run(spec, "s2t", lm), t).set_index("known_id")
    assert table.loc[0, "stage"] == "units" and table.loc[0, "reason"] == (
        "known_id=0: AudioInputError: the clip is 31.00 s, longer than the audio encoder's 30 s window (the feature "
        "extractor would cut it)")
    t = copy.copy(tables)
    t.alignment = tables.alignment.copy()
    t.alignment.loc[t.alignment["known_id"] == 1, ["subject_start_s", "subject_end_s"]] = [1.90, 2.10]  # clip: 1.8 s
    t.manifest = tables.manifest.assign(path=[str(tables.dir / "gone.wav"), tables.manifest["path"][1]])
    table = _table(for_run(spec, "s2t", lm), t).set_index("known_id")
    assert table.loc[1, "stage"] == "span" and table.loc[1, "reason"] == (
        "known_id=1: the subject [1.900, 2.100) s starts after the last real audio frame (45 frames at 25 Hz = 1.800 s): "
        "it falls in the encoder's padding, past the audio")
    assert table.loc[0, "stage"] == "units" and "cannot read the clip" in table.loc[0, "reason"]
    assert "\n" not in "".join(table["reason"]) and (table["status"] == "quarantined").all()


def test_prepare_refuses_another_familys_folder_and_a_processor_without_the_audio_token(qwen2audio_dir, tmp_path, ckpt,
                                                                                      tiny_model_dir):
    """Rule prepare_model (crosstrace.steps.prepare_model) stops with a one-line error before any speech work."""
    entry = {"name": "q", "family": "qwen2-audio", "modalities": ["t2t", "s2t"]}
    llama = tiny_model_dir
    bad = tmp_path / "bad-processor"
    shutil.copytree(qwen2audio_dir, bad)
    cfg = json.loads((bad / "processor_config.json").read_text())
    (bad / "processor_config.json").write_text(json.dumps({**cfg, "audio_token": "<|SPEECH|>"}))
    for path, message in [(llama, r"model_type 'llama' is not a Qwen2-Audio model \('qwen2_audio'\)"),
                          (ckpt["root"], "no config.json, so it is not a Hugging Face model folder"),
                          (bad, r"the processor's audio token '<\|SPEECH\|>' is missing from the tokenizer")]:
        with pytest.raises(ModelLoadError, match=message) as e:
            prepare_model({**entry, "path": str(path)}, None, tmp_path / "model.json")
        assert "\n" not in str(e.value) and not (tmp_path / "model.json").exists()
    with pytest.raises(ModelLoadError, match="need the loaded processor and template"):
        for_run({**entry, "path": str(qwen2audio_dir)}, "s2t", object())


# ---------------------------------------------------------------------------------------------------- config


@pytest.fixture(scope="module")
def default():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    validate(cfg, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    return cfg


def _broken(cfg, **entry) -> str:
    c = copy.deepcopy(cfg)
    c["models"][0].update(entry)
    with pytest.raises(ConfigError) as e:
        check(c)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_schema_lists_the_families_of_the_package():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert schema["properties"]["models"]["items"]["properties"]["family"]["enum"] == list(FAMILIES)
    for family in FAMILIES[1:]:  # every speech family is a module with a FAMILY
        assert speech_family(family).name == family


def test_config_rules_for_qwen2_audio(default):
    ok = copy.deepcopy(default)
    ok["models"][0].update(family="qwen2-audio", path="Qwen/Qwen2-Audio-7B", modalities=["t2t", "s2t"],
                           template={"text": "{prompt} The answer is", "audio": None, "chat": False})
    assert check(ok)[ok["models"][0]["name"]].template["text"] == "{prompt} The answer is"
    assert "needs family: spiritlm or family: qwen2-audio" in _broken(default, modalities=["t2t", "s2t"])
    assert "template applies to family qwen2-audio only" in _broken(default, template={"text": "{prompt}"})
    assert "stray_space applies to family spiritlm only" in _broken(default, family="qwen2-audio", stray_space=True)
    assert "template.text must hold {prompt} exactly once" in _broken(
        default, family="qwen2-audio", template={"text": "{prompt} and {prompt}"})
    assert "leave template.audio unset" in _broken(
        default, family="qwen2-audio", template={"text": "{prompt}", "audio": "<|AUDIO|>", "chat": True})


def test_the_speech_llms_config_runs_the_paper_and_qwen2_audio():
    cfg = yaml.safe_load((ROOT / "config" / "speech-llms.yaml").read_text())
    validate(cfg, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    specs = check(cfg)
    assert {n: (s.family, s.modalities) for n, s in specs.items()} == {
        "spiritlm-base-7b": ("spiritlm", ("t2t", "s2t")), "llama-2-7b": ("hf", ("t2t",)),
        "qwen2-audio-7b": ("qwen2-audio", ("t2t", "s2t"))}
    assert specs["qwen2-audio-7b"].path == "Qwen/Qwen2-Audio-7B"
    pairs = {(c["a"]["model"], c["a"]["modality"], c["b"]["model"], c["b"]["modality"]) for c in cfg["stats"]["compare"]}
    assert {("spiritlm-base-7b", "s2t", "qwen2-audio-7b", "s2t"), ("spiritlm-base-7b", "t2t", "spiritlm-base-7b", "s2t"),
            ("qwen2-audio-7b", "t2t", "qwen2-audio-7b", "s2t")} <= pairs
