"""Your own facts (data.source): every file type and layout, column mapping, and malformed variants
(missing column, empty file, wrong types, duplicate ids, subject not in prompt), in the style of
test_bad_input.py: a DataError naming the file, or a quarantined record with the reason."""

from __future__ import annotations

import copy
import csv
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.utils import validate

from crosstrace.data import DataError, KnownRecord, load_known, sha256_file
from crosstrace.sources import check_sha256, read_facts

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")

FACTS = [
    {"id": 3, "prompt": "Paris is the capital of", "subject": "Paris", "attribute": "France"},
    {"id": 5, "prompt": "The Eiffel Tower is located in the city of", "subject": "The Eiffel Tower", "attribute": "Paris"},
    {"id": 9, "prompt": "Toyota was founded in the country of", "subject": "Toyota", "attribute": "Japan"},
]
EXPECTED = [KnownRecord(r["id"], r["subject"], r["attribute"], r["prompt"]) for r in FACTS]


def write(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    """Rows in the file type its suffix names (json list, jsonl, csv, tsv, parquet)."""
    kind = path.suffix
    if kind == ".json":
        path.write_text(json.dumps(rows))
    elif kind == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind in (".csv", ".tsv"):
        columns = columns or list(rows[0])
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, columns, dialect="excel-tab" if kind == ".tsv" else "excel")
            w.writeheader()
            w.writerows(rows)
    elif kind == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    return path


# ------------------------------------------------------------------------------------------- formats

@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".tsv", ".parquet"])
def test_facts_in_every_file_type(tmp_path, suffix):
    records, quarantined, layout = read_facts(write(tmp_path / f"facts{suffix}", FACTS))
    assert layout == "facts" and quarantined == []
    assert records == EXPECTED


@pytest.mark.parametrize("suffix", [".json", ".csv", ".parquet"])
def test_without_an_id_column_the_id_is_the_position(tmp_path, suffix):
    rows = [{k: v for k, v in r.items() if k != "id"} for r in FACTS]
    records, _, _ = read_facts(write(tmp_path / f"facts{suffix}", rows))
    assert [r.known_id for r in records] == [0, 1, 2]


def test_the_known_dataset_read_as_an_own_file_gives_the_same_records(tmp_path):
    known = ROOT / "resources" / "known_1000.json"
    records, quarantined, layout = read_facts(known)
    ref, ref_q = load_known(known)
    assert layout == "facts" and len(records) == 1209 and not quarantined and not ref_q
    # Known's prediction field is not read from own files; everything else is identical.
    assert [(r.known_id, r.subject, r.attribute, r.prompt, r.template, r.relation_id) for r in records] == \
           [(r.known_id, r.subject, r.attribute, r.prompt, r.template, r.relation_id) for r in ref]


def test_mapped_columns(tmp_path):
    rows = [{"qid": r["id"], "text": r["prompt"], "entity": r["subject"], "answer": r["attribute"]} for r in FACTS]
    p = write(tmp_path / "mine.csv", rows)
    records, _, _ = read_facts(p, columns={"id": "qid", "prompt": "text", "subject": "entity", "attribute": "answer"})
    assert records == EXPECTED


COUNTERFACT = [
    {"case_id": 0, "pararel_idx": 2796,
     "requested_rewrite": {"prompt": "The mother tongue of {} is", "relation_id": "P103",
                           "target_new": {"str": "English", "id": "Q1860"}, "target_true": {"str": "French", "id": "Q150"},
                           "subject": "Danielle Darrieux"},
     "paraphrase_prompts": ["Shayna does this and Yossel goes still and dies. Danielle Darrieux, a native"],
     "neighborhood_prompts": ["The mother tongue of Léon Blum is"], "generation_prompts": []},
    {"case_id": 1, "pararel_idx": 1026,
     "requested_rewrite": {"prompt": "{}, which is located in", "relation_id": "P17",
                           "target_new": {"str": "Germany", "id": "Q183"}, "target_true": {"str": "Italy", "id": "Q38"},
                           "subject": "Autonomous University of Madrid"},
     "paraphrase_prompts": [], "neighborhood_prompts": [], "generation_prompts": []},
]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_counterfact_records(tmp_path, suffix):
    records, quarantined, layout = read_facts(write(tmp_path / f"counterfact{suffix}", COUNTERFACT))
    assert layout == "counterfact" and not quarantined
    assert records == [
        KnownRecord(0, "Danielle Darrieux", "French", "The mother tongue of Danielle Darrieux is",
                    template="The mother tongue of {} is", relation_id="P103"),
        KnownRecord(1, "Autonomous University of Madrid", "Italy", "Autonomous University of Madrid, which is located in",
                    template="{}, which is located in", relation_id="P17"),
    ]


def test_counterfact_bad_records_are_quarantined(tmp_path):
    bad = copy.deepcopy(COUNTERFACT)
    bad[0]["requested_rewrite"]["prompt"] = "The mother tongue of Danielle Darrieux is"  # no {}
    del bad[1]["requested_rewrite"]["target_true"]
    bad.append({**copy.deepcopy(COUNTERFACT[0]), "case_id": 7})
    records, quarantined, _ = read_facts(write(tmp_path / "cf.json", bad))
    assert [r.known_id for r in records] == [7]
    assert [(q.index, q.known_id) for q in quarantined] == [(0, 0), (1, 1)]
    assert "should contain '{}' exactly once" in quarantined[0].reason
    assert quarantined[1].reason == "missing column 'requested_rewrite.target_true.str' (attribute)"


POPQA = [
    {"id": 4222362, "subj": "George Rankin", "prop": "occupation", "obj": "politician",
     "question": "What is George Rankin's occupation?", "s_pop": 142, "o_pop": 25692},
    {"id": 1, "subj": "Lorenzo Bernini", "prop": "place of birth", "obj": "Naples",
     "question": "In what city was Lorenzo Bernini born?", "s_pop": 9000, "o_pop": 80000},
    {"id": 2, "subj": "Ponte Vecchio", "prop": "country", "obj": "Italy",
     "question": "In what country is Ponte Vecchio?", "s_pop": 9000, "o_pop": 80000},
]
TEMPLATES = {"occupation": "{}'s occupation is", "place of birth": "{} was born in the city of"}


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_popqa_table_with_templates_per_prop(tmp_path, suffix):
    records, quarantined, layout = read_facts(write(tmp_path / f"popqa{suffix}", POPQA), templates=TEMPLATES)
    assert layout == "popqa"
    assert records == [
        KnownRecord(4222362, "George Rankin", "politician", "George Rankin's occupation is",
                    template="{}'s occupation is", relation_id="occupation"),
        KnownRecord(1, "Lorenzo Bernini", "Naples", "Lorenzo Bernini was born in the city of",
                    template="{} was born in the city of", relation_id="place of birth"),
    ]
    assert [(q.index, q.known_id, q.reason) for q in quarantined] == [
        (2, 2, "no template for prop 'country' (add it to data.templates)")]


def test_popqa_without_templates_is_a_data_error_listing_the_props(tmp_path):
    p = write(tmp_path / "popqa.csv", POPQA)
    with pytest.raises(DataError, match=r"needs data.templates.*\['country', 'occupation', 'place of birth'\]") as e:
        read_facts(p)
    assert str(p) in str(e.value)


# ------------------------------------------------------------------------------------- malformed files

@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_missing_column_is_a_data_error_naming_it(tmp_path, suffix):
    rows = [{k: v for k, v in r.items() if k != "subject"} for r in FACTS]
    p = write(tmp_path / f"facts{suffix}", rows)
    with pytest.raises(DataError, match=r"no record has column 'subject' \(subject; set data.columns.subject\)") as e:
        read_facts(p)
    assert str(p) in str(e.value) and "'attribute'" in str(e.value)  # lists the columns it has


def test_a_mapping_typo_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no record has column 'answr'"):
        read_facts(write(tmp_path / "f.csv", FACTS), columns={"attribute": "answr"})


@pytest.mark.parametrize("name,content,message", [
    ("empty.csv", "", "empty file"),
    ("empty.json", "", "empty file"),
    ("empty.jsonl", "", "empty file"),
    ("empty.parquet", "", "empty file"),
    ("header-only.csv", "id,prompt,subject,attribute\n", "no records"),
    ("blank-lines.jsonl", "\n\n", "no records"),
    ("empty-list.json", "[]", "no records"),
    ("object.json", '{"prompt": "x"}', "expected a JSON list of records, got dict"),
    ("truncated.json", '[{"prompt": ', "not valid JSON"),
    ("garbage.parquet", "not parquet at all", "not a readable parquet file"),
    ("facts.txt", "prompt\n", "unknown file type '.txt'"),
    ("dup-header.csv", "prompt,subject,subject,attribute\n", "duplicate column names ['subject']"),
], ids=lambda v: v if isinstance(v, str) and v.count(".") == 1 and "\n" not in v and len(v) < 24 else "")
def test_unusable_file_is_a_data_error_naming_the_file(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(DataError, match=re.escape(message)) as e:
        read_facts(p)
    assert str(p) in str(e.value)


def test_missing_file_and_non_utf8(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_facts(tmp_path / "nope.csv")
    p = tmp_path / "latin1.csv"
    p.write_bytes("prompt,subject,attribute\nZürich liegt in,Zürich,der Schweiz\n".encode("latin-1"))
    records, quarantined, _ = read_facts(p)  # per row since 2026-12 (tests/test_rough_edges.py)
    assert records == [] and [(q.index, q.known_id, q.reason) for q in quarantined] == [
        (0, 0, "line 2 is not UTF-8 text (byte b'\\xfc' at offset 26)")]


@pytest.mark.parametrize("suffix", [".json", ".csv", ".parquet"])
def test_duplicate_ids_are_a_data_error_naming_id_and_records(tmp_path, suffix):
    rows = FACTS + [{**FACTS[0], "prompt": "Paris, the capital of", "attribute": "France"}]
    with pytest.raises(DataError, match=r"duplicate id 3 \(records #0 and #3\); ids must be unique"):
        read_facts(write(tmp_path / f"facts{suffix}", rows))


def good(**changes) -> dict:
    return {**FACTS[0], **changes}


# Each bad record is quarantined with its reason; the good record after it is kept.
QUARANTINED_JSON = [
    ("subject-not-in-prompt", good(subject="Rome"), 3, "subject 'Rome' does not occur in prompt 'Paris is the capital of'"),
    ("subject-case-differs", good(subject="paris"), 3, "subject 'paris' does not occur in prompt"),
    ("id-as-string", good(id="3"), None, "column 'id' (id) should be a non-negative integer, got str '3'"),
    ("id-as-float", good(id=3.5), None, "column 'id' (id) should be a non-negative integer, got float 3.5"),
    ("id-as-bool", good(id=True), None, "got bool True"),
    ("id-negative", good(id=-1), None, "got int -1"),
    ("id-null", good(id=None), None, "got NoneType None"),
    ("subject-as-int", good(subject=5), 3, "column 'subject' (subject) should be text, got int 5"),
    ("attribute-as-list", good(attribute=["France"]), 3, "column 'attribute' (attribute) should be text, got list"),
    ("prompt-null", good(prompt=None), 3, "column 'prompt' (prompt) should be text, got NoneType"),
    ("attribute-empty", good(attribute="  "), 3, "column 'attribute' (attribute) is empty"),
    ("prompt-missing", {k: v for k, v in good().items() if k != "prompt"}, 3, "missing column 'prompt' (prompt)"),
    ("record-is-list", [1, 2], None, "record #0 is a list, not an object"),
]


@pytest.mark.parametrize("raw,known_id,reason", [c[1:] for c in QUARANTINED_JSON], ids=[c[0] for c in QUARANTINED_JSON])
def test_bad_json_record_is_quarantined_with_reason(tmp_path, raw, known_id, reason):
    records, quarantined, _ = read_facts(write(tmp_path / "f.json", [raw, FACTS[1]]))
    assert [r.known_id for r in records] == [5], "the good record is kept"
    assert len(quarantined) == 1 and quarantined[0].index == 0 and quarantined[0].stage == "load"
    assert reason in quarantined[0].reason
    assert quarantined[0].known_id == known_id, "the quarantine row names the record when its id is readable"


@pytest.mark.parametrize("line,reason", [
    ("x7,Paris is the capital of,Paris,France", "column 'id' (id) should be a non-negative integer, got str 'x7'"),
    (",Paris is the capital of,Paris,France", "got str ''"),
    ("3,Paris is the capital of,Rome,Italy", "subject 'Rome' does not occur in prompt"),
    ("3,Paris is the capital of,Paris,", "column 'attribute' (attribute) is empty"),
    ("3,Paris is the capital of,Paris", "line 2 has 3 fields, the header has 4"),
    ("3,Paris is the capital of,Paris,France,extra", "line 2 has 5 fields, the header has 4"),
], ids=["id-not-integer", "id-empty", "subject-not-in-prompt", "attribute-empty", "too-few-fields", "too-many-fields"])
def test_bad_csv_row_is_quarantined_with_reason(tmp_path, line, reason):
    p = tmp_path / "f.csv"
    p.write_text(f"id,prompt,subject,attribute\n{line}\n5,The Eiffel Tower is located in the city of,The Eiffel Tower,Paris\n")
    records, quarantined, _ = read_facts(p)
    assert [r.known_id for r in records] == [5]
    assert len(quarantined) == 1 and reason in quarantined[0].reason


def test_bad_jsonl_line_is_quarantined_and_counted(tmp_path):
    p = tmp_path / "f.jsonl"
    p.write_text(json.dumps(FACTS[0]) + "\n{not json}\n\n" + json.dumps(FACTS[1]) + "\n")
    records, quarantined, _ = read_facts(p)
    assert [r.known_id for r in records] == [3, 5]
    assert [(q.index, q.reason) for q in quarantined] == [(1, "line 2 is not valid JSON (Expecting property name "
                                                              "enclosed in double quotes at column 2)")]


def test_parquet_with_wrong_column_types(tmp_path):
    p = tmp_path / "f.parquet"
    pd.DataFrame({"id": ["a", "b"], "prompt": ["Paris is the capital of", "x"], "subject": ["Paris", "x"],
                  "attribute": [1, 2]}).to_parquet(p)
    records, quarantined, _ = read_facts(p)
    assert records == [] and [q.reason for q in quarantined] == [
        "column 'id' (id) should be a non-negative integer, got str 'a'",
        "column 'id' (id) should be a non-negative integer, got str 'b'"]


# -------------------------------------------------------------------------------------------- limit

def test_limit_counts_input_records_before_validation(tmp_path):
    rows = [FACTS[0], good(id=4, subject="Rome"), FACTS[1], FACTS[2], {**FACTS[2], "prompt": "Toyota is headquartered in the country of"}]
    p = write(tmp_path / "f.json", rows)
    records, quarantined, _ = read_facts(p, limit=2)
    assert [r.known_id for r in records] == [3] and [q.index for q in quarantined] == [1]
    records, quarantined, _ = read_facts(p, limit=4)  # the duplicate of 9 is record #4, beyond the limit
    assert len(records) + len(quarantined) == 4
    with pytest.raises(DataError, match=r"duplicate id 9 \(records #3 and #4\)"):
        read_facts(p, limit=5)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_limit_in_every_file_type(tmp_path, suffix):
    records, quarantined, _ = read_facts(write(tmp_path / f"f{suffix}", FACTS), limit=2)
    assert [r.known_id for r in records] == [3, 5] and not quarantined


# ------------------------------------------------------------------------------------------- sha256

def test_sha256_optional_and_checked_when_given(tmp_path):
    p = write(tmp_path / "f.csv", FACTS)
    digest = sha256_file(p)
    assert check_sha256(p, None) == digest
    assert check_sha256(p, digest.upper()) == digest
    with pytest.raises(DataError, match="does not match data.file_sha256"):
        check_sha256(p, "0" * 64)


# ------------------------------------------------------------------------------------------- schema

def cfg(**data) -> dict:
    return {"models": [{"name": "m", "path": "x"}], "data": data}


def test_schema_defaults_for_own_facts():
    c = cfg(source="facts.csv")
    validate(c, SCHEMA)
    d = c["data"]
    assert (d["format"], d["templates"], d["file_sha256"], d["limit"]) == ("auto", {}, None, None)
    assert d["columns"] == {"id": None, "prompt": None, "template": None, "subject": None, "attribute": None,
                            "relation": None}
    c = cfg()
    validate(c, SCHEMA)
    assert c["data"]["source"] == "known"


@pytest.mark.parametrize("data,where", [
    ({"format": "rome"}, "['data']['format']"),
    ({"columns": {"answer": "obj"}}, "['data']['columns']"),
    ({"columns": {"subject": 3}}, "['data']['columns']['subject']"),
    ({"templates": {"occupation": "occupation of"}}, "['data']['templates']['occupation']"),
    ({"templates": {"occupation": "{} and {}"}}, "['data']['templates']['occupation']"),
    ({"file_sha256": "abc"}, "['data']['file_sha256']"),
    ({"source": ""}, "['data']['source']"),
], ids=["format", "unknown-column-field", "column-not-string", "template-without-braces", "two-braces", "sha256",
        "empty-source"])
def test_schema_rejects_bad_own_data_settings(data, where):
    with pytest.raises(Exception, match="validat") as e:
        validate(cfg(**data), SCHEMA)
    assert where in str(e.value) or where.split("]")[-2].strip("['") in str(e.value)


def test_config_yaml_documents_the_new_keys():
    text = (ROOT / "config.yaml").read_text()
    for key in ("source:", "format:", "columns:", "templates:", "file_sha256:"):
        assert key in text
    validate(yaml.safe_load(text), SCHEMA)
