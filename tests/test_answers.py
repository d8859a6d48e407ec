"""trace.answer: which tokens P[o] reads, how the attribute is tokenized after the prompt, and where the
choice is recorded. Engine equivalence for n-token answers is in test_trace_engine.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crosstrace.answers import answer_label, answer_tokens
from crosstrace.spans import Encoded, SpanError
from crosstrace.trace import NoiseConfig, Tracer, TraceSettings
from crosstrace.trace.tables import (
    CATEGORY_COLUMNS,
    IE_COLUMNS,
    ShardError,
    category_table,
    merge_shards,
    trace_records,
)
from crosstrace.trace.tokens import attribute_token_ids, encode_text

KINDS = ("hidden", "mlp", "attn")
VINSON = "Vinson Massif is located in the continent of"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_answer_tokens_per_mode():
    assert answer_tokens("top1", [4, 5]) is None
    assert answer_tokens("attribute_first", [4, 5]) == [4]
    assert answer_tokens("attribute_full", [4, 5]) == [4, 5]
    with pytest.raises(ValueError, match="needs the attribute"):
        answer_tokens("attribute_full", None)
    with pytest.raises(ValueError, match="answer must be one of"):
        answer_tokens("top2", [4])
    with pytest.raises(ValueError, match="answer must be one of"):
        TraceSettings(answer="attribute")
    assert answer_label(None) == answer_label("top1") == "o = clean top-1 token"


# ------------------------------------------------------------------ the attribute's tokens in context


@pytest.fixture(scope="module")
def smol_tok(cache_dir):
    from transformers import AutoTokenizer

    from crosstrace.models.loading import prepare_model

    return AutoTokenizer.from_pretrained(prepare_model("smollm2-135m-offline", cache_dir))


def _pieces(tok, ids):
    return [tok.decode([i]) for i in ids]


def test_attribute_tokens_follow_the_prompt_smollm2(smol_tok):
    enc = lambda text: encode_text(smol_tok, text)  # noqa: E731
    ids = attribute_token_ids(enc, VINSON, "Antarctica")
    assert _pieces(smol_tok, ids) == [" Antarctica"] and ids == [17821]  # "Antarctica" alone: 3 tokens
    # in context: the word after a space, not the word at the start of a text
    assert ids != smol_tok("Antarctica", add_special_tokens=False)["input_ids"]
    assert attribute_token_ids(enc, VINSON, " Antarctica") == ids  # a leading space is not doubled
    assert _pieces(smol_tok, attribute_token_ids(enc, "Apple's headquarters are in", "Cupertino")) == [" Cu", "pert", "ino"]


def test_attribute_tokenization_errors(smol_tok):
    enc = lambda text: encode_text(smol_tok, text)  # noqa: E731
    with pytest.raises(SpanError, match="merges the end of prompt"):
        attribute_token_ids(enc, "The capital of France is ", "Paris")  # " " + "Paris" become one token
    with pytest.raises(SpanError, match="is empty"):
        attribute_token_ids(enc, VINSON, "  ")


def test_attribute_tokens_ignore_trailing_special_tokens(smol_tok):
    def with_eos(text):  # a tokenizer that appends an EOS to every text
        e = encode_text(smol_tok, text)
        return Encoded(e.input_ids + [0], e.offsets + [(0, 0)], (0, 0))

    plain = attribute_token_ids(lambda text: encode_text(smol_tok, text), VINSON, "Antarctica")
    assert attribute_token_ids(with_eos, VINSON, "Antarctica") == plain


# ------------------------------------------------------------------ the tracer, end to end


@pytest.fixture(scope="module")
def tiny(tiny_model_dirs):
    from transformers import AutoTokenizer, LlamaForCausalLM

    d = tiny_model_dirs(layers=3)
    return LlamaForCausalLM.from_pretrained(d).eval(), AutoTokenizer.from_pretrained(d)


def _tracer(tiny, answer: str, engine: str = "fast") -> Tracer:
    model, tok = tiny
    return Tracer(model, tok, TraceSettings(window=2, noise=NoiseConfig(samples=3), engine=engine, answer=answer), 0.3)


def _attributes(tok, n_tokens: int) -> tuple[str, str, str]:
    """A Known-style (prompt, subject, attribute) whose attribute has ``n_tokens`` tokens after the prompt."""
    import json

    from conftest import ROOT

    for r in json.loads((ROOT / "resources" / "known_1000.json").read_text()):
        ids = attribute_token_ids(lambda text: encode_text(tok, text), r["prompt"], r["attribute"])
        if len(ids) == n_tokens:
            return r["prompt"], r["subject"], r["attribute"]
    raise AssertionError(f"no Known attribute of {n_tokens} tokens")


@pytest.mark.parametrize("engine", ["fast", "reference", "atp"])
def test_attribute_full_of_one_token_equals_attribute_first(tiny, engine):
    prompt, subject, attribute = _attributes(tiny[1], 1)
    full = _tracer(tiny, "attribute_full", engine).trace_text(3, prompt, subject, attribute=attribute)
    first = _tracer(tiny, "attribute_first", engine).trace_text(3, prompt, subject, attribute=attribute)
    assert full.answer_ids == first.answer_ids and len(full.answer_ids) == 1
    assert full.p_clean == first.p_clean and full.p_corrupted == first.p_corrupted
    for kind in KINDS:
        np.testing.assert_array_equal(full.kinds[kind].p_restored, first.kinds[kind].p_restored)


@pytest.mark.parametrize("answer", ["top1", "attribute_first", "attribute_full"])
def test_tracer_fast_equals_reference_per_mode(tiny, answer):
    prompt, subject, attribute = _attributes(tiny[1], 3)
    fast = _tracer(tiny, answer, "fast").trace_text(5, prompt, subject, attribute=attribute)
    ref = _tracer(tiny, answer, "reference").trace_text(5, prompt, subject, attribute=attribute)
    assert fast.answer_ids == ref.answer_ids and fast.answer_mode == answer
    assert fast.p_clean == pytest.approx(ref.p_clean, abs=1e-6)
    for kind in KINDS:
        np.testing.assert_allclose(fast.kinds[kind].ie, ref.kinds[kind].ie, atol=1e-6, rtol=0)
    n_prompt = len(fast.input_ids)
    assert fast.kinds["hidden"].p_restored.shape[0] == n_prompt  # the grid is the prompt's tokens
    attr_ids = attribute_token_ids(lambda text: encode_text(tiny[1], text), prompt, attribute)
    assert len(fast.answer_ids) == {"top1": 1, "attribute_first": 1, "attribute_full": 3}[answer]
    if answer != "top1":
        assert list(fast.answer_ids) == attr_ids[: len(fast.answer_ids)]
        assert fast.answer == tiny[1].decode(list(fast.answer_ids))


def test_joint_probability_is_below_its_first_factor(tiny):
    prompt, subject, attribute = _attributes(tiny[1], 3)
    full = _tracer(tiny, "attribute_full").trace_text(5, prompt, subject, attribute=attribute)
    first = _tracer(tiny, "attribute_first").trace_text(5, prompt, subject, attribute=attribute)
    assert full.answer_ids[0] == first.answer_ids[0]
    assert 0 < full.p_clean < first.p_clean  # two more factors < 1


def test_records_without_a_usable_attribute_are_quarantined(tiny):
    prompt, subject, attribute = _attributes(tiny[1], 2)
    tracer = _tracer(tiny, "attribute_full")
    records = [
        {"known_id": 1, "prompt": prompt, "subject": subject, "attribute": attribute},
        {"known_id": 2, "prompt": prompt, "subject": subject, "attribute": ""},
        {"known_id": 3, "prompt": prompt, "subject": subject},
    ]
    ie, q = trace_records(tracer, records, "tiny", "t2t", progress=False)
    assert list(ie.columns) == IE_COLUMNS and ie["known_id"].unique().tolist() == [1]
    assert set(ie["answer_mode"]) == {"attribute_full"} and set(ie["answer_tokens"]) == {2}
    assert q["known_id"].tolist() == [2, 3] and all("attribute" in r for r in q["reason"])
    cats = category_table(ie)
    assert list(cats.columns) == CATEGORY_COLUMNS and set(cats["answer_mode"]) == {"attribute_full"}
    # top1 never reads the attribute: every record is traced
    ie1, q1 = trace_records(_tracer(tiny, "top1"), records, "tiny", "t2t", progress=False)
    assert q1.empty and set(ie1["answer_mode"]) == {"top1"} and set(ie1["answer_tokens"]) == {1}


def test_merge_refuses_shards_of_different_answer_modes(tiny, tmp_path):
    prompt, subject, attribute = _attributes(tiny[1], 2)
    paths = []
    for i, answer in enumerate(["top1", "attribute_full"]):
        rec = {"known_id": i, "prompt": prompt, "subject": subject, "attribute": attribute}
        ie, q = trace_records(_tracer(tiny, answer), [rec], "tiny", "t2t", progress=False)
        ie.to_parquet(tmp_path / f"{i}.parquet")
        q.to_parquet(tmp_path / f"{i}.quarantine.parquet")
        paths.append(tmp_path / f"{i}.parquet")
    with pytest.raises(ShardError, match="different trace.answer"):
        merge_shards(paths)
    assert isinstance(merge_shards(paths[:1])[0], pd.DataFrame)


# ------------------------------------------------------------------ AtP, PromptTrace and the traced-prompts table


@pytest.mark.parametrize("answer", ["top1", "attribute_first", "attribute_full"])
def test_atp_engine_reads_the_same_answer(tiny, answer):
    """engine: atp reads the same o, P_clean and P_corrupted as the exact engines in every answer mode."""
    prompt, subject, attribute = _attributes(tiny[1], 3)
    approx = _tracer(tiny, answer, "atp").trace_text(5, prompt, subject, attribute=attribute)
    exact = _tracer(tiny, answer, "fast").trace_text(5, prompt, subject, attribute=attribute)
    assert approx.answer_ids == exact.answer_ids and approx.answer_mode == answer
    assert approx.p_clean == pytest.approx(exact.p_clean, abs=1e-6)
    assert approx.p_corrupted == pytest.approx(exact.p_corrupted, abs=1e-6)
    assert approx.kinds["mlp"].p_restored.shape == exact.kinds["mlp"].p_restored.shape


def test_prompt_trace_shows_the_answer_mode(tiny):
    import matplotlib.pyplot as plt

    prompt, subject, attribute = _attributes(tiny[1], 2)
    tr = _tracer(tiny, "attribute_full").trace_text(4, prompt, subject, attribute=attribute)
    assert tr.attribute == attribute and len(tr.answer_ids) == 2
    frame = tr.to_frame()
    assert set(frame["answer_mode"]) == {"attribute_full"} and set(frame["answer_tokens"]) == {2}
    assert "whole attribute (joint P, teacher-forced)" in repr(tr)
    fig = tr.plot("mlp")
    assert "whole attribute (joint P, teacher-forced)" in fig._suptitle.get_text()
    assert fig._supxlabel is None or "does not start" not in fig._supxlabel.get_text()  # o is the attribute
    plt.close(fig)


@pytest.mark.parametrize("answer,mode,first_token,ok", [
    (" Europe", "top1", " original", True),          # top1: o itself is the model's greedy token
    (" original", "top1", " Europe", False),
    (" Europe", "attribute_full", " original", False),  # attribute modes: o is the attribute, the check reads
    (" Europe", "attribute_first", " Eur", True),       # the Known filter's first greedy token
    (" Europe", None, None, True),                     # a table from before trace.answer: top1
])
def test_greedy_answer_matches(answer, mode, first_token, ok):
    from crosstrace.filtering import greedy_answer_matches

    assert greedy_answer_matches(answer, mode, first_token, "Europe") is ok


def test_traced_table_records_the_answer_mode():
    from crosstrace.report import prompts as P

    rows = [dict(known_id=k, kind="mlp", token_index=t, token=f" t{t}", layer=0, ie=0.1, p_restored=0.2, p_clean=0.5,
                 p_corrupted=0.1, answer=" Europe", answer_mode="attribute_full", answer_tokens=2, subject_start=0,
                 subject_end=1, n_tokens=2) for k in (6, 9) for t in range(2)]
    known = pd.DataFrame({"known_id": [6, 9], "subject": ["A", "B"], "attribute": ["Europe", "Europe"],
                          "prompt": ["A is in", "B is in"], "continuation": [" Europe", " the"],
                          "first_token": [" Europe", " the"], "label": ["exact", "partial"]})
    table = P.traced_table(pd.DataFrame(rows), known)
    assert table.columns.tolist() == P.TABLE_COLUMNS
    assert table["answer_mode"].tolist() == ["attribute_full"] * 2 and table["answer_tokens"].tolist() == [2, 2]
    assert table["answer_expected"].tolist() == [True, False]  # B's greedy " the" does not start Europe
    page = P.page(table, {"model": "m", "modality": "t2t", "answer": "attribute_full"}, {}, 0)
    assert "trace.answer: attribute_full" in page and "(2 tokens)" in page
    assert "first greedy token does not start the attribute" in page


def test_aie_table_carries_the_answer_mode():
    from crosstrace.report.stats import aie_table

    cats = pd.DataFrame({"model": "m", "modality": "t2t", "known_id": [1, 2], "kind": "mlp", "category": "last",
                         "layer": 0, "ie": [0.1, 0.3], "answer_mode": "attribute_first"})
    aie = aie_table(cats, n_boot=10, category_mean="per_prompt")
    assert aie["answer_mode"].tolist() == ["attribute_first"] and aie["aie"].tolist() == pytest.approx([0.2])
    older = cats.drop(columns="answer_mode")  # tables from before trace.answer existed
    assert "answer_mode" not in aie_table(older, n_boot=10, category_mean="per_prompt")
    with pytest.raises(ValueError, match="different trace.answer settings"):
        aie_table(cats.assign(answer_mode=["top1", "attribute_first"]), n_boot=10, category_mean="per_prompt")
