"""Nothing lost: for every rule that reads records, input = kept + quarantined, on a real run of the DAG.

The dataset is the first 8 Known records with two broken (subject not in the prompt, attribute missing)
and one made too long to trace; data.limit: 7 leaves the 8th out. The S→T rules (speech_select,
synthesize, speech_qc, align, speech_units, the S→T filter) are checked the same way in
tests/test_s2t_dag.py, recordings (load_recordings) in tests/test_own_data_workflow.py. Own facts
(data.source, rule read_facts) take the same data.limit: their first N input rows. More runs end at the
first stage after validation with the run-ending message: an empty dataset, one where every record is
quarantined, and an own file where every row is.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import ROOT
from workflow_run import snakemake, tiny_config, write_config

from crosstrace.data import QUARANTINE_TYPES, RECORD_TYPES

pytestmark = pytest.mark.slow

LIMIT = 7
BROKEN = {2: "does not occur in prompt", 3: "missing field 'attribute'"}  # input index → reason
LONG = 5  # input index of the record whose prompt is over trace.max_prompt_tokens


def accounted(inputs, kept, quarantined, what: str) -> None:
    """Every input id is kept or quarantined, exactly once."""
    inputs, kept, quarantined = list(inputs), list(kept), list(quarantined)
    assert len(set(inputs)) == len(inputs), f"{what}: duplicate input ids"
    assert not set(kept) & set(quarantined), f"{what}: ids both kept and quarantined: {set(kept) & set(quarantined)}"
    assert sorted(kept + quarantined) == sorted(inputs), f"{what}: input {inputs} != kept {kept} + quarantined {quarantined}"


def dataset(path: Path, records: list) -> dict:
    """Write a Known-format file and return the data section that reads it (url + its sha256)."""
    path.write_text(json.dumps(records))
    return {"url": path.as_uri(), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "fallback": str(path)}


def known_records(n: int) -> list[dict]:
    return json.loads((ROOT / "resources" / "known_1000.json").read_text())[:n]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir) -> Path:
    d = tmp_path_factory.mktemp("accounting")
    raw = known_records(8)
    raw[2]["subject"] = "Nowhere in the prompt"
    del raw[3]["attribute"]
    raw[LONG]["prompt"] = "word " * 60 + raw[LONG]["prompt"]
    cfg = tiny_config(tiny_model_dir, data={"limit": LIMIT, **dataset(d / "known.json", raw)},
                      trace={"max_prompts": None, "shard_size": 2, "max_prompt_tokens": 40})
    write_config(d / "config.yaml", cfg)
    r = snakemake(d, "--cores", "2")
    assert r.returncode == 0, r.stderr[-4000:]
    (d / "raw.json").write_text(json.dumps(raw))
    return d


def test_validate_known_keeps_or_quarantines_the_first_limit_records(run):
    data = run / "results" / "data"
    records, quarantine = pd.read_parquet(data / "records.parquet"), pd.read_parquet(data / "quarantine.parquet")
    raw = json.loads((run / "raw.json").read_text())
    kept_index = [i for i, r in enumerate(raw[:LIMIT]) if r["known_id"] in set(records["known_id"])]
    accounted(range(LIMIT), kept_index, quarantine["index"].tolist(), "validate_known")
    assert dict(zip(quarantine["index"], quarantine["reason"], strict=True)).keys() == BROKEN.keys()
    for i, reason in zip(quarantine["index"], quarantine["reason"], strict=True):
        assert BROKEN[i] in reason
    assert raw[7]["known_id"] not in set(records["known_id"]), "data.limit: the 8th record is not considered"
    assert pq.read_schema(data / "records.parquet").names == list(RECORD_TYPES)


def test_filter_and_noise_read_every_valid_record(run):
    records = pd.read_parquet(run / "results" / "data" / "records.parquet")
    known = pd.read_parquet(run / "results" / "tiny" / "t2t" / "known.parquet")
    accounted(records["known_id"], known["known_id"], [], "filter_known (t2t labels every record)")
    noise = json.loads((run / "results" / "tiny" / "t2t" / "noise.json").read_text())
    assert noise["n_subjects"] == len(records), "noise_std: one subject per valid record"


def test_each_trace_shard_traces_or_quarantines_its_ids(run):
    t2t = run / "results" / "tiny" / "t2t"
    known = pd.read_parquet(t2t / "known.parquet")
    ids = known["known_id"].tolist()  # require_known: false, no cap
    blocks = [ids[i : i + 2] for i in range(0, len(ids), 2)]
    assert sorted(p.name for p in (t2t / "shards").glob("[0-9]*.parquet") if "quarantine" not in p.name) == \
        [f"{i}.parquet" for i in range(len(blocks))]
    for i, block in enumerate(blocks):
        ie = pd.read_parquet(t2t / "shards" / f"{i}.parquet")
        q = pd.read_parquet(t2t / "shards" / f"{i}.quarantine.parquet")
        accounted(block, ie["known_id"].unique().tolist(), q["known_id"].tolist(), f"trace shard {i}")


def test_merge_accounts_for_every_selected_prompt(run):
    t2t = run / "results" / "tiny" / "t2t"
    known = pd.read_parquet(t2t / "known.parquet")
    ie, q = pd.read_parquet(t2t / "ie_per_prompt.parquet"), pd.read_parquet(t2t / "quarantine.parquet")
    accounted(known["known_id"], ie["known_id"].unique().tolist(), q["known_id"].tolist(), "merge")
    long_id = json.loads((run / "raw.json").read_text())[LONG]["known_id"]
    assert q["known_id"].tolist() == [long_id]
    assert q["stage"].tolist() == ["trace"] and "over the limit of 40 (max_prompt_tokens" in q["reason"].iloc[0]
    summary = json.loads((t2t / "summary.json").read_text())
    assert summary["traced"] + summary["quarantined"] == len(known) == summary["records"]
    html = (t2t / "qc.html").read_text()
    assert "over trace.max_prompt_tokens" in html and str(long_id) in html


def test_logs_are_under_the_results_directory(run):
    logs = run / "results" / "logs"
    assert (logs / "validate_known" / "validate_known.log").read_text().count("quarantined") >= len(BROKEN)
    assert sorted(p.name for p in (logs / "trace").glob("*.log")) == [f"tiny_t2t_{i}.log" for i in range(3)]
    assert not (run / "logs").exists(), "no logs outside the results directory"


OWN_CSV = (
    "prompt,subject,attribute\n"
    "Paris is the capital of,Paris,France\n"
    "Rome is the capital of,Madrid,Italy\n"  # subject not in the prompt
    "Toyota is headquartered in,Toyota\n"  # a field short
    "Berlin is the capital of,Berlin,Germany\n"
    "Oslo is the capital of,Oslo,Norway\n"  # beyond data.limit
)


def test_read_facts_keeps_or_quarantines_the_first_limit_rows(tmp_path):
    (tmp_path / "facts.csv").write_text(OWN_CSV)
    write_config(tmp_path / "config.yaml", tiny_config("unused", data={"source": "facts.csv", "limit": 4}))
    r = snakemake(tmp_path, "--cores", "1", "results/data/records.parquet")
    assert r.returncode == 0, r.stderr[-3000:]
    data = tmp_path / "results" / "data"
    records, quarantine = pd.read_parquet(data / "records.parquet"), pd.read_parquet(data / "quarantine.parquet")
    # without an id column a row's id is its position in the file
    accounted(range(4), records["known_id"].tolist(), quarantine["index"].tolist(), "read_facts")
    assert records["known_id"].tolist() == [0, 3] and quarantine["index"].tolist() == [1, 2]
    assert pq.read_schema(data / "records.parquet").names == list(RECORD_TYPES)
    assert (tmp_path / "results" / "logs" / "read_facts" / "read_facts.log").exists()


@pytest.mark.parametrize("case", ["empty-dataset", "all-quarantined", "own-file-all-quarantined"])
def test_no_records_left_ends_the_run_with_a_clear_message(tmp_path, tiny_model_dir, case):
    if case == "own-file-all-quarantined":
        (tmp_path / "k.csv").write_text("prompt,subject,attribute\nRome is the capital of,Madrid,Italy\n"
                                        "Oslo is the capital of,Bergen,Norway\n")
        raw, data = [None, None], {"source": "k.csv"}
    else:
        raw = [] if case == "empty-dataset" else [{**r, "subject": "not in it"} for r in known_records(3)]
        data = dataset(tmp_path / "k.json", raw)
    write_config(tmp_path / "config.yaml", tiny_config(tiny_model_dir, data={"limit": None, **data}))
    r = snakemake(tmp_path, "--cores", "1")
    assert r.returncode != 0
    assert "0 records left after validation: see results/data/quarantine.parquet" in r.stderr, r.stderr[-3000:]
    assert "KeyError" not in r.stderr and "Traceback" not in r.stderr, "one line on the console, the traceback in the log"
    data = tmp_path / "results" / "data"
    for name, types in (("records", RECORD_TYPES), ("quarantine", QUARANTINE_TYPES)):
        schema = pq.read_schema(data / f"{name}.parquet")
        assert schema.names == list(types), name
        assert {str(schema.field(c).type) for c, t in types.items() if t is str} == {"string"}, name
        assert str(schema.field("known_id").type) == ("int64" if name == "records" else "string")
    assert len(pd.read_parquet(data / "records.parquet")) == 0
    assert len(pd.read_parquet(data / "quarantine.parquet")) == len(raw)
