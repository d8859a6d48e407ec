"""Bad inputs at every stage: each one fails with a specific error naming the record / key / file, or is
quarantined with a reason. Nothing crashes with a raw library error and nothing disappears silently.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import make_tiny_model_dir
from snakemake.utils import validate

from crosstrace.data import (
    DataError,
    KnownRecord,
    Quarantined,
    fetch_known,
    load_known,
    parse_known,
    validate_record,
    verify_sha256,
)
from crosstrace.models.hubert import CheckpointError, load_hubert, load_quantizer
from crosstrace.models.loading import ModelLoadError, load_model, prepare_model, resolve_device
from crosstrace.models.spiritlm import load_spiritlm
from crosstrace.trace.tables import IE_COLUMNS, QUARANTINE_COLUMNS, ShardError, merge_shards, trace_records

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")
GOOD = {"known_id": 7, "subject": "Paris", "attribute": "France", "prompt": "Paris is the capital of",
        "template": "{} is the capital of", "prediction": " France", "relation_id": "P1376"}


def rec(**changes) -> dict:
    r = {**GOOD, **changes}
    return {k: v for k, v in r.items() if v is not DROP}


DROP = object()

# ------------------------------------------------------------------------------------- data: records

QUARANTINED = [
    ("missing-known_id", rec(known_id=DROP), "missing field 'known_id'"),
    ("missing-subject", rec(subject=DROP), "missing field 'subject'"),
    ("missing-attribute", rec(attribute=DROP), "missing field 'attribute'"),
    ("missing-prompt", rec(prompt=DROP), "missing field 'prompt'"),
    ("id-as-string", rec(known_id="7"), "field 'known_id' should be int, got str '7'"),
    ("id-as-float", rec(known_id=7.0), "field 'known_id' should be int, got float"),
    ("id-as-bool", rec(known_id=True), "field 'known_id' should be int, got bool"),
    ("id-as-null", rec(known_id=None), "field 'known_id' should be int, got NoneType"),
    ("negative-id", rec(known_id=-3), "known_id must be non-negative, got -3"),
    ("subject-as-int", rec(subject=5), "field 'subject' should be str, got int"),
    ("prompt-as-list", rec(prompt=["Paris"]), "field 'prompt' should be str, got list"),
    ("attribute-as-null", rec(attribute=None), "field 'attribute' should be str, got NoneType"),
    ("template-as-int", rec(template=3), "field 'template' should be str, got int"),
    ("empty-prompt", rec(prompt=""), "field 'prompt' is empty"),
    ("empty-subject", rec(subject=""), "field 'subject' is empty"),
    ("empty-attribute", rec(attribute=""), "field 'attribute' is empty"),
    ("blank-attribute", rec(attribute="  \t"), "field 'attribute' is empty"),
    ("subject-not-in-prompt", rec(subject="Rome"), "subject 'Rome' does not occur in prompt"),
    ("subject-case-differs", rec(subject="paris"), "subject 'paris' does not occur in prompt"),
    ("record-is-list", [1, 2], "record #0 is a list, not an object"),
    ("record-is-null", None, "record #0 is a NoneType, not an object"),
]


@pytest.mark.parametrize("raw,reason", [c[1:] for c in QUARANTINED], ids=[c[0] for c in QUARANTINED])
def test_bad_record_is_quarantined_with_reason(raw, reason):
    good = rec(known_id=1)
    records, quarantined = parse_known([good, copy.deepcopy(raw)] if isinstance(raw, dict) else [raw, good])
    assert [r.known_id for r in records] == [1], "the good record is kept"
    assert len(quarantined) == 1, "the bad one is accounted for, not dropped"
    q = quarantined[0]
    assert isinstance(q, Quarantined) and q.stage == "load"
    assert reason in q.reason
    if isinstance(raw, dict) and isinstance(raw.get("known_id"), int):
        assert q.known_id == raw["known_id"], "the quarantine row names the record"


def known8_with_4_and_5_broken() -> list:
    raw = json.loads((ROOT / "resources" / "known_1000.json").read_text())[:8]
    for i in (4, 5):
        raw[i] = {**raw[i], "subject": "not in the prompt"}
    return raw


@pytest.mark.parametrize("limit", [None, *range(1, 10)])
def test_limit_is_the_first_n_input_records_each_kept_or_quarantined(limit):
    """data.limit = the first N input records, valid or not: every one of them is in exactly one table."""
    raw = known8_with_4_and_5_broken()
    records, quarantined = parse_known(raw, "known.json", limit=limit)
    considered = raw if limit is None else raw[:limit]
    kept_index = [i for i, r in enumerate(considered) if r["known_id"] in {k.known_id for k in records}]
    q_index = [q.index for q in quarantined]
    assert not set(kept_index) & set(q_index)
    assert sorted(kept_index + q_index) == list(range(len(considered)))
    assert len(records) + len(quarantined) == len(considered)


def test_limit_5_with_records_4_and_5_broken(tmp_path):
    """The case that used to lose record 5 and keep record 6 instead."""
    p = tmp_path / "known.json"
    p.write_text(json.dumps(known8_with_4_and_5_broken()))
    records, quarantined = load_known(p, limit=5)
    assert [r.known_id for r in records] == [0, 1, 2, 3]
    assert [(q.index, q.known_id) for q in quarantined] == [(4, 4)]


def test_duplicate_ids_beyond_the_limit_are_not_considered():
    raw = [rec(known_id=1), rec(known_id=2), rec(known_id=1)]
    assert [r.known_id for r in parse_known(raw, limit=2)[0]] == [1, 2]
    with pytest.raises(DataError, match="duplicate known_id"):
        parse_known(raw)


@pytest.mark.parametrize("prompt,subject", [
    ("Zürich liegt in", "Zürich"),
    ("東京は日本の首都です。首都は", "東京"),
    ("Café Ünïcode 🚀 launched by", "Ünïcode 🚀"),
    ("Naïve subject at the end: Ελλάδα", "Ελλάδα"),
], ids=["german", "japanese", "emoji", "greek"])
def test_non_ascii_records_are_accepted(prompt, subject):
    r = validate_record(0, rec(prompt=prompt, subject=subject))
    assert isinstance(r, KnownRecord)
    start, end = r.subject_chars
    assert r.prompt[start:end] == subject


def test_very_long_prompt_is_accepted_by_the_data_stage():
    prompt = "word " * 20000 + "Paris is the capital of"
    r = validate_record(0, rec(prompt=prompt))
    assert isinstance(r, KnownRecord) and r.subject_chars[0] == len("word ") * 20000


# ---------------------------------------------------------------------------------- data: whole file

@pytest.mark.parametrize("content,message", [
    ('[{"known_id": 1,', "not valid JSON"),
    ("", "not valid JSON"),
    ("{'known_id': 1}", "not valid JSON"),
    ('{"known_id": 1}', "expected a JSON list of records, got dict"),
    ('"just a string"', "expected a JSON list of records, got str"),
    ("null", "expected a JSON list of records, got NoneType"),
], ids=["truncated", "empty-file", "single-quotes", "object-not-list", "string-not-list", "null-not-list"])
def test_unusable_file_is_a_data_error_naming_the_file(tmp_path, content, message):
    p = tmp_path / "known.json"
    p.write_text(content)
    with pytest.raises(DataError, match=message) as e:
        load_known(p)
    assert str(p) in str(e.value)


def test_non_utf8_file_is_a_data_error(tmp_path):
    p = tmp_path / "latin1.json"
    p.write_bytes(json.dumps([rec(prompt="Zürich liegt", subject="Zürich")], ensure_ascii=False).encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text") as e:
        load_known(p)
    assert str(p) in str(e.value)


def test_duplicate_known_id_is_a_data_error_naming_the_id():
    with pytest.raises(DataError, match=r"duplicate known_id \[7\]"):
        parse_known([rec(), rec(subject="Paris is")], "known.json")


def test_dataset_hash_mismatch(tmp_path):
    p = tmp_path / "known_1000.json"
    p.write_bytes((ROOT / "resources" / "known_1000.json").read_bytes() + b" ")
    with pytest.raises(DataError, match="does not match the expected") as e:
        verify_sha256(p)
    assert str(p) in str(e.value)


def test_fetch_with_bad_fallback_hash_leaves_no_file(tmp_path):
    bad = tmp_path / "fallback.json"
    bad.write_text("[]")
    dest = tmp_path / "out" / "known_1000.json"
    with pytest.raises(DataError, match="sha256"):
        fetch_known(dest, url="http://127.0.0.1:9/unreachable", fallback=bad, timeout=1)
    assert not dest.exists() and not list(dest.parent.iterdir())


# --------------------------------------------------------------------------------------------- models

def test_unknown_hub_model_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="no-such-org/no-such-model"):
        load_model("no-such-org/no-such-model")


@pytest.mark.parametrize("spec", ["./no/such/model", "/no/such/model", "~/no/such/model"])
def test_missing_local_model_path(spec):
    with pytest.raises(ModelLoadError, match="does not exist"):
        prepare_model(spec)


def test_model_folder_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="needs config.json") as e:
        load_model(str(tmp_path))
    assert str(tmp_path) in str(e.value)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("tiny")
    cfg = LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    LlamaForCausalLM(cfg).save_pretrained(d)
    return d


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_hf_weights(tmp_path, tiny_model_dir, damage):
    d = tmp_path / "model"
    shutil.copytree(tiny_model_dir, d)
    w = d / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes({"garbage": b"\x00garbage" * 64, "truncated": data[: len(data) // 2], "empty": b""}[damage])
    with pytest.raises(ModelLoadError) as e:
        load_model(str(d))
    assert str(d) in str(e.value)


def test_bad_dtype_and_unavailable_device():
    with pytest.raises(ModelLoadError, match="dtype must be one of"):
        load_model("/unused", dtype="float64")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="'cuda:0' requested but CUDA is not available"):
            resolve_device("cuda:0")


@pytest.mark.parametrize("loader", [load_hubert, load_quantizer], ids=["hubert", "quantizer"])
@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip"], ids=["empty", "text", "truncated-zip"])
def test_corrupt_speech_checkpoint(tmp_path, loader, content):
    p = tmp_path / "ckpt.pt"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot be read as a weights-only torch pickle") as e:
        loader(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("loader", [load_hubert, load_quantizer], ids=["hubert", "quantizer"])
def test_missing_speech_checkpoint(tmp_path, loader):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        loader(tmp_path / "missing.pt")


class RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("loader", [load_hubert, load_quantizer], ids=["hubert", "quantizer"])
def test_pickle_that_runs_code_is_refused_with_our_message(tmp_path, loader):
    p, marker = tmp_path / "evil.pt", tmp_path / "code-ran"
    torch.save({"model_cfg": {}, "model_weight": RunsCode(marker)}, p)
    with pytest.raises(CheckpointError) as e:
        loader(p)
    msg = str(e.value)
    assert f"{p} is a pickle that could run code when loaded (it names posix.system)" in msg
    assert "Re-save it once with tensors" in msg and "only where you trust the file's origin" in msg
    assert "will likely succeed" not in msg and e.value.__cause__ is None and e.value.__suppress_context__
    assert not marker.exists()


def test_hf_weights_pickle_that_runs_code_is_refused_with_a_safetensors_recipe(tmp_path):
    from safetensors.torch import load_file

    from crosstrace.models.loading import ModelLoadError

    d, marker = make_tiny_model_dir(tmp_path / "model"), tmp_path / "code-ran"
    state = load_file(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    torch.save({**state, "extra": RunsCode(marker)}, d / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as e:
        load_model(str(d))
    msg = str(e.value)
    assert msg.startswith(f"the weights file in {d} is a pickle that could run code when loaded")
    assert "Convert it once to safetensors" in msg and f"save_pretrained('{d}-safetensors')" in msg
    assert "will likely succeed" not in msg and not marker.exists()


def test_speech_checkpoint_with_wrong_top_level(tmp_path):
    p = tmp_path / "list.pt"
    torch.save([1, 2, 3], p)
    with pytest.raises(CheckpointError, match="expected a dict at top level, got list"):
        load_hubert(p)


def test_spiritlm_missing_folder_and_files(tmp_path):
    with pytest.raises(ModelLoadError, match="SpiritLM folder does not exist"):
        load_spiritlm(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="missing SpiritLM file"):
        load_spiritlm(tmp_path)


def test_spiritlm_corrupt_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": 32512, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}))
    (tmp_path / "tokenizer.model").write_bytes(b"x")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02garbage" * 8)
    with pytest.raises(ModelLoadError, match="corrupt or not a weights-only checkpoint") as e:
        load_spiritlm(tmp_path, dtype="float32")
    assert "weights_only=False will likely succeed" not in str(e.value)  # never suggest unsafe loading


# ------------------------------------------------------------------------------------------- tracing

def fake_trace(known_id: int, p_clean=0.5, p_corrupted=0.1, restored=None):
    from crosstrace.trace.api import PromptTrace
    from crosstrace.trace.state import KindTrace

    restored = np.full((2, 2), 0.3) if restored is None else restored
    kind = KindTrace("hidden", 3, p_clean, p_corrupted, restored)
    return PromptTrace(known_id, [1, 2], ["a", "b"], (0, 1), 3, "c", p_clean, p_corrupted, 0.1, {"hidden": kind})


TRACER = SimpleNamespace(settings=SimpleNamespace(noise=SimpleNamespace(samples=2, seed=0), window=2), engine="fast")


@pytest.mark.parametrize("bad", [
    {"p_clean": math.nan}, {"p_corrupted": math.inf},
    {"restored": np.array([[0.1, np.nan], [0.2, 0.3]])}, {"restored": np.array([[0.1, -np.inf], [0.2, 0.3]])},
], ids=["nan-clean", "inf-corrupted", "nan-restored", "inf-restored"])
def test_non_finite_trace_is_quarantined(bad):
    records = [{"known_id": 1, "prompt": "p", "subject": "s"}, {"known_id": 2, "prompt": "p", "subject": "s"}]
    ie, q = trace_records(TRACER, records, "m", "t2t", trace_one=lambda r: fake_trace(r["known_id"], **(bad if r["known_id"] == 2 else {})),
                          progress=False)
    assert sorted(ie["known_id"].unique()) == [1]
    assert list(q.columns) == QUARANTINE_COLUMNS and q["known_id"].tolist() == [2]
    assert q["stage"].tolist() == ["trace"] and "non-finite" in q["reason"].iloc[0]


def test_nan_logits_from_a_real_model_are_quarantined(tiny_model_dir):
    from transformers import LlamaForCausalLM

    from crosstrace.trace import Tracer, TraceSettings

    model = LlamaForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    tok = SimpleNamespace(decode=lambda ids, **kw: " ".join(map(str, ids)))
    tracer = Tracer(model, tok, TraceSettings(window=1), noise_std=1.0)
    ie, q = trace_records(tracer, [{"known_id": 4, "prompt": "p", "subject": "s"}], "m", "t2t",
                          trace_one=lambda r: tracer.trace_ids(r["known_id"], [1, 2, 3, 4], (1, 2)), progress=False)
    assert ie.empty and q["known_id"].tolist() == [4] and "non-finite" in q["reason"].iloc[0]


def test_prompt_over_max_tokens_is_quarantined_before_tracing(tiny_model_dir):
    from transformers import LlamaForCausalLM

    from crosstrace.trace import Tracer, TraceSettings

    model = LlamaForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = SimpleNamespace(decode=lambda ids, **kw: " ".join(map(str, ids)))
    tracer = Tracer(model, tok, TraceSettings(window=1, max_tokens=5), noise_std=1.0)
    records = [{"known_id": 1, "ids": [1, 2, 3, 4, 5]}, {"known_id": 2, "ids": list(range(1, 31))}]
    ie, q = trace_records(tracer, records, "m", "t2t", trace_one=lambda r: tracer.trace_ids(r["known_id"], r["ids"], (0, 1)),
                          progress=False)
    assert sorted(ie["known_id"].unique()) == [1] and q["known_id"].tolist() == [2]
    assert q["reason"].iloc[0] == ("prompt has 30 tokens, over the limit of 5 (max_prompt_tokens; "
                                   "tracing cost grows with the square of the length)")


def test_long_trace_gets_a_cost_warning_on_the_console(tiny_model_dir, monkeypatch, caplog):
    from transformers import LlamaForCausalLM

    from crosstrace.trace import Tracer, TraceSettings, api

    model = LlamaForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = SimpleNamespace(decode=lambda ids, **kw: str(ids))
    tracer = Tracer(model, tok, TraceSettings(window=1, kinds=("hidden",)), noise_std=1.0)
    monkeypatch.setattr(api, "LONG_PROMPT_TOKENS", 10)
    monkeypatch.setattr(api, "LONG_TRACE_SECONDS", 0.0)
    with caplog.at_level("WARNING", logger="crosstrace"):
        tracer.trace_ids(3, list(range(1, 13)), (0, 2))
        tracer.trace_ids(4, list(range(1, 6)), (0, 2))  # under LONG_PROMPT_TOKENS: no estimate
    [w] = [r for r in caplog.records if "will take about" in r.getMessage()]
    assert w.getMessage().startswith("known_id 3: 12 tokens; tracing it will take about ")
    assert getattr(w, "console", False), "the warning goes to the console, not only the log"


@pytest.mark.parametrize("kind,T,b,L,window,engine,passes", [
    ("hidden", 4, 0, 2, 1, "reference", 9.0),    # clean pass + T·L restorations
    ("hidden", 4, 0, 2, 1, "fast", 2.25),        # 1 + (4+3+2+1) positions × (1+0) blocks / (4·2)
    ("hidden", 4, 2, 2, 1, "fast", 1.375),       # subject from token 2: (2+1) × 1 / 8
    ("mlp", 4, 0, 2, 2, "fast", 1 + 10 * 2 / 8),  # window 2: layer 0 patches block 0 (start 1), layer 1 block 0-1 (start 1)
])
def test_trace_passes_by_hand(kind, T, b, L, window, engine, passes):
    from crosstrace.trace.api import trace_passes

    assert trace_passes(kind, T, b, L, window, engine) == pytest.approx(passes)


def test_unexpected_trace_error_fails_loudly():
    def boom(r):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        trace_records(TRACER, [{"known_id": 1, "prompt": "p", "subject": "s"}], "m", "t2t", trace_one=boom, progress=False)


# -------------------------------------------------------------------------------------- merge shards

def write_shard(d: Path, i: int, known_ids) -> Path:
    rows = [{c: 0 for c in IE_COLUMNS} | {"known_id": k, "model": "m", "modality": "t2t", "kind": "hidden"} for k in known_ids]
    p = d / f"{i}.parquet"
    pd.DataFrame(rows, columns=IE_COLUMNS).to_parquet(p)
    pd.DataFrame(columns=QUARANTINE_COLUMNS).to_parquet(d / f"{i}.quarantine.parquet")
    return p


@pytest.mark.parametrize("damage", ["truncated", "text", "empty", "no-quarantine-file"])
def test_damaged_shard_is_named(tmp_path, damage):
    good = write_shard(tmp_path, 0, [1])
    bad = write_shard(tmp_path, 1, [2])
    if damage == "truncated":
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    elif damage == "text":
        bad.write_text("not parquet")
    elif damage == "empty":
        bad.write_bytes(b"")
    else:
        (tmp_path / "1.quarantine.parquet").unlink()
    with pytest.raises(ShardError, match="is unreadable") as e:
        merge_shards([str(good), str(bad)])
    assert str(bad) in str(e.value)


def test_overlapping_shards_are_refused(tmp_path):
    paths = [str(write_shard(tmp_path, 0, [1, 2])), str(write_shard(tmp_path, 1, [2, 3]))]
    with pytest.raises(ShardError, match=r"known_id \[2\] appear in more than one shard"):
        merge_shards(paths)


# ------------------------------------------------------------------------------------- config schema

def base_config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def set_key(cfg: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = cfg
    for k in parents:
        node = node[int(k)] if k.isdigit() else node.setdefault(k, {})
    node[last] = value
    return cfg


def test_default_config_is_valid():
    validate(base_config(), SCHEMA)


@pytest.mark.parametrize("key,value,named", [
    ("reslts", "results", "'reslts' was unexpected"),
    ("trace.noise.sampels", 3, "'sampels' was unexpected"),
    ("filter.max_new_token", 3, "'max_new_token' was unexpected"),
    ("models.0.devcie", "cuda", "'devcie' was unexpected"),
    ("trace.noise.samples", 0, "['trace']['noise']['samples']"),
    ("trace.window", 0, "['trace']['window']"),
    ("filter.max_new_tokens", 1000, "['filter']['max_new_tokens']"),
    ("trace.noise.multiple", -1.0, "['trace']['noise']['multiple']"),
    ("trace.shard_size", 0, "['trace']['shard_size']"),
    ("data.limit", 0, "['data']['limit']"),
    ("models.0.device", "gpu", "['models'][0]['device']"),
    ("models.0.dtype", "float64", "['models'][0]['dtype']"),
    ("models.0.name", "a/b", "['models'][0]['name']"),
    ("trace.kinds", ["resid"], "['trace']['kinds'][0]"),
    ("figures.formats", ["jpg"], "['figures']['formats'][0]"),
    ("data.sha256", "xyz", "['data']['sha256']"),
    ("trace.noise.samples", "10", "['trace']['noise']['samples']"),
    ("stats.similarity.n_random", 0, "['stats']['similarity']['n_random']"),
    ("stats.similarity.n_rnd", 3, "'n_rnd' was unexpected"),
    ("trace.max_prompt_tokens", 0, "['trace']['max_prompt_tokens']"),
    ("trace.max_prompt_token", 10, "'max_prompt_token' was unexpected"),
])
def test_config_error_names_the_key(key, value, named):
    from snakemake.exceptions import WorkflowError

    with pytest.raises(WorkflowError) as e:
        validate(set_key(base_config(), key, value), SCHEMA)
    assert named in str(e.value)


def test_config_without_models_is_rejected():
    from snakemake.exceptions import WorkflowError

    cfg = base_config()
    del cfg["models"]
    with pytest.raises(WorkflowError, match="'models' is a required property"):
        validate(cfg, SCHEMA)


@pytest.mark.slow
def test_config_typo_stops_a_dry_run_naming_the_key(tmp_path):
    from workflow_run import snakemake, tiny_config, write_config

    cfg = tiny_config(tmp_path / "m")
    cfg["trace"]["noise"]["sampels"] = 3
    write_config(tmp_path / "config.yaml", cfg)
    r = snakemake(tmp_path, "--dry-run")
    assert r.returncode != 0 and "'sampels' was unexpected" in r.stdout + r.stderr


# ------------------------------------------------------------------------------------ speech (WAV etc.)
# Each bad clip becomes a quarantined row naming the problem (and the known_id), never a failed job.


def _wav(path, audio, sr=16000):
    import soundfile as sf

    sf.write(str(path), np.asarray(audio, dtype=np.float32), sr, subtype="PCM_16")
    return path


def _tone(seconds=0.5, sr=16000, amp=0.3):
    t = np.arange(int(seconds * sr)) / sr
    return amp * np.sin(2 * np.pi * 220 * t)


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda d: d / "missing.wav", "cannot read WAV"),
        (lambda d: (d / "garbage.wav").write_bytes(b"RIFF not really a wav") and d / "garbage.wav", "cannot read WAV"),
    ],
    ids=["missing-wav", "corrupt-wav"],
)
def test_unreadable_wav_is_a_reason_naming_the_file(tmp_path, make, expected):
    from crosstrace.speech.pipeline import qc_record, try_load_audio16k

    path = make(tmp_path)
    audio, err = try_load_audio16k(path)
    assert audio is None and expected in err and str(path) in err
    row = qc_record(None, 17, "Paris is in", audio, 0.5, audio_error=err)
    assert not row.passes_qc and row.reason.startswith("known_id=17:") and str(path) in row.reason


@pytest.mark.parametrize(
    "audio,expected",
    [
        (np.zeros(0), "empty audio"),
        (np.zeros(16000), "silent audio"),
        (_tone(0.05), "too short"),
        (np.clip(_tone(amp=3.0), -1, 1), "clipped audio"),
        (np.full(16000, np.nan), "non-finite"),
    ],
    ids=["truncated-to-header", "silent", "too-short", "clipped", "nan"],
)
def test_bad_audio_is_quarantined_in_qc_and_alignment(tmp_path, audio, expected):
    from crosstrace.speech.pipeline import align_record, audio_problem, qc_record

    assert expected in audio_problem(audio, 16000)
    q = qc_record(None, 5, "Paris is in", audio, 0.5)
    assert not q.passes_qc and q.reason.startswith("known_id=5:") and expected in q.reason
    a = align_record("tts", 5, "Paris is in", "Paris", audio)
    assert a.status != "ok" and expected in a.reason


def test_header_only_wav_reads_as_empty_audio(tmp_path):
    from crosstrace.speech.pipeline import audio_problem, try_load_audio16k

    path = _wav(tmp_path / "t.wav", _tone())
    path.write_bytes(path.read_bytes()[:44])  # keep the RIFF header, drop the samples
    audio, err = try_load_audio16k(path)
    assert (audio is None and "cannot read WAV" in err) or audio_problem(audio, 16000) == "empty audio"


def test_other_sample_rate_is_resampled_not_rejected(tmp_path):
    from crosstrace.speech.pipeline import audio_problem, try_load_audio16k

    audio, err = try_load_audio16k(_wav(tmp_path / "t.wav", _tone(1.0, sr=22050), sr=22050))
    assert err is None and len(audio) == 16000 and audio_problem(audio, 16000) is None


def test_subject_missing_from_alignment_is_quarantined():
    from crosstrace.speech.align import WordSegment, tts_alignment

    words = [WordSegment(w, i * 0.3, i * 0.3 + 0.25, 1.0) for i, w in enumerate(["Paris", "is", "in"])]
    a = tts_alignment(9, "Paris is in", "Rome", words)
    assert a.status != "ok" and "Rome" in a.reason
