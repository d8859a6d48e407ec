"""crosstrace's SpiritLM prompt ids equal the reference's (SpiritLM's own tokenization of whole prompts).

Golden ids: tests/fixtures/spiritlm_ids/golden_ids.json, made by make_golden_ids.py beside it with the slow
``LlamaTokenizer(add_bos_token=True)`` of transformers 4.46.3 on the fixture's toy tokenizer.model (markers
and units as native user-defined pieces), in a scratch environment that is not part of the project.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from spiritlm_fixture import build_tokenizer_model

from crosstrace.models.spiritlm import load_spiritlm_tokenizer, s2t_ids, t2t_encode

HERE = Path(__file__).resolve().parent
GOLDEN = json.loads((HERE / "fixtures" / "spiritlm_ids" / "golden_ids.json").read_text(encoding="utf-8"))
PROMPTS = [r["prompt"] for r in json.loads((HERE.parent / "resources" / "known_1000.json").read_text())]


def ids_of(s: str) -> list[int]:
    return [int(x) for x in s.split()]


@pytest.fixture(scope="module")
def tok(ckpt):
    return load_spiritlm_tokenizer(ckpt["lm"])


def test_fixture_tokenizer_is_the_one_the_golden_ids_were_made_with(tmp_path):
    build_tokenizer_model(tmp_path / "tokenizer.model")
    assert hashlib.sha256((tmp_path / "tokenizer.model").read_bytes()).hexdigest() == GOLDEN["tokenizer_model_sha256"]


def test_s2t_ids_equal_reference():
    for case in GOLDEN["s2t"]:
        want = ids_of(case["ids"])
        assert want[:3] == [1, 29871, 32001] and want[-1] == 32000
        assert s2t_ids(ids_of(case["units"])) == want


def test_t2t_ids_equal_reference(tok):
    shown = GOLDEN["t2t"]
    assert len(shown) > 100
    for case in shown:
        want = ids_of(case["ids"])
        assert want[:3] == [1, 29871, 32000]
        assert t2t_encode(tok, case["prompt"]).input_ids == want, case["prompt"]
    # every prompt of the dataset, through the digest of their ids
    assert len(PROMPTS) == GOLDEN["t2t_count"]
    lines = "\n".join(" ".join(map(str, t2t_encode(tok, p).input_ids)) for p in PROMPTS)
    assert hashlib.sha256(lines.encode()).hexdigest() == GOLDEN["t2t_all_sha256"]


def test_dropping_the_stray_space_is_a_one_token_shift(tok):
    case = GOLDEN["t2t"][0]
    want = ids_of(case["ids"])
    assert t2t_encode(tok, case["prompt"], stray_space=False).input_ids == [want[0]] + want[2:]
    assert s2t_ids([7, 338], stray_space=False) == [1, 32001, 32009, 32340, 32000]


def test_paper_config_reproduces_the_reference_with_no_extra_settings(tok):
    """config/paper.yaml, validated with the schema's defaults, builds the reference ids and S→T spans from
    text tokens: nothing to set for either."""
    import yaml
    from snakemake.utils import validate

    from crosstrace.modality import for_run
    from crosstrace.speech.prompts import row_ids

    root = HERE.parent
    cfg = yaml.safe_load((root / "config" / "paper.yaml").read_text())
    validate(cfg, str(root / "workflow" / "schemas" / "config.schema.yaml"))
    spec = next(m for m in cfg["models"] if m["family"] == "spiritlm")
    t2t = for_run(spec, "t2t", tok)
    assert "stray_space" not in spec and t2t.stray_space is True
    for case in GOLDEN["t2t"][:20]:
        assert t2t.encode(case["prompt"]).input_ids == ids_of(case["ids"])
    case = GOLDEN["s2t"][3]
    assert row_ids({"dedup": ids_of(case["units"])}, t2t.stray_space) == ids_of(case["ids"])
    assert cfg["speech"]["align"]["use"] == "ctc"  # the paper's aligner: CTC character frames inside words
