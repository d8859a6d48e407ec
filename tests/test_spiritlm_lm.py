"""SpiritLM LM loading, tokenizer ids of the markers, and the T→T / S→T prompt conventions."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from spiritlm_fixture import SPACE_ID

from crosstrace.models.loading import ModelLoadError
from crosstrace.models.spiritlm import (
    TEXT_BAD_WORDS,
    load_spiritlm,
    load_spiritlm_bundle,
    load_spiritlm_tokenizer,
    s2t_ids,
    t2t_encode,
    text_bad_words,
)
from crosstrace.speech.units import unit_offset

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok(ckpt):
    return load_spiritlm_tokenizer(ckpt["lm"])


def test_markers_are_single_tokens_with_release_ids(tok):
    assert tok("[Speech][Hu0][Text]")["input_ids"] == [1, 32001, 32002, 32000]
    assert tok("[Speech][Hu99][Hu49][Hu500][Text]")["input_ids"] == [1, 32001, 32101, 32051, 32502, 32000]
    assert tok.convert_ids_to_tokens([32000, 32001, 32002, 32502]) == ["[Text]", "[Speech]", "[Hu0]", "[Hu500]"]
    assert tok.convert_tokens_to_ids("▁") == SPACE_ID == 29871
    # decoding round-trips the prompt string exactly (SpiritLM strips the prompt by its length)
    ids = tok("[Speech][Hu7][Hu338][Text]")["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) == "[Speech][Hu7][Hu338][Text]"


def test_sentencepiece_native_matches_documented_facts(ckpt):
    """The fixture behaves like the real tokenizer.model is documented to: the stray ▁ is SentencePiece's."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(ckpt["tokenizer_model"]))
    assert sp.get_piece_size() == 32503
    assert [sp.piece_to_id(p) for p in ("[Text]", "[Speech]", "[Hu0]", "[Hu500]")] == [32000, 32001, 32002, 32502]
    assert sp.encode("[Speech][Hu0][Text]") == [29871, 32001, 32002, 32000]
    assert sp.encode("[Text]The", out_type=str) == ["▁", "[Text]", "T", "h", "e"]


def test_s2t_ids_built_directly(tok):
    units = [99, 49, 38, 361, 0, 500]
    ids = s2t_ids(units)
    assert ids == [1, 29871, 32001, 32101, 32051, 32040, 32363, 32002, 32502, 32000]  # the reference's ids
    assert unit_offset(ids) == 3 and ids[3] == 32002 + 99
    # without the stray ▁ (a deviation): what the transformers-5 tokenizer gives for SpiritLM's prompt string
    prompt = "[Speech]" + "".join(f"[Hu{u}]" for u in units) + "[Text]"
    assert s2t_ids(units, stray_space=False) == tok(prompt)["input_ids"]
    assert s2t_ids(units, stray_space=False)[:2] == [1, 32001] and unit_offset(s2t_ids(units, stray_space=False)) == 2
    with pytest.raises(ValueError, match="0..500"):
        s2t_ids([501])


def test_t2t_convention(tok):
    ids = t2t_encode(tok, "The capital of France is").input_ids
    text = tok.convert_ids_to_tokens(ids)
    # default (the reference): the stray ▁ after BOS, no ▁ on the first word after [Text] (SentencePiece-native)
    assert ids[:3] == [1, 29871, 32000] and text[3:6] == ["T", "h", "e"] and text[6] == "▁capital"
    assert ids == [1, 29871] + tok("[Text]The capital of France is")["input_ids"][1:]
    alt = tok.convert_ids_to_tokens(t2t_encode(tok, "The capital of France is", first_word_space=True).input_ids)
    assert alt[:5] == ["<s>", "▁", "[Text]", "▁The", "▁capital"]
    dropped = t2t_encode(tok, "The capital of France is", stray_space=False).input_ids
    assert dropped[:2] == [1, 32000] and dropped[2:] == ids[3:]
    with pytest.raises(ValueError, match="marker"):
        t2t_encode(tok, "a [Text] b")


@pytest.mark.parametrize("first_word_space", [False, True])
@pytest.mark.parametrize("stray", [False, True])
def test_t2t_subject_span(tok, first_word_space, stray):
    enc = t2t_encode(tok, "The capital of France is", "The capital", stray_space=stray, first_word_space=first_word_space)
    toks = tok.convert_ids_to_tokens(enc.input_ids)
    b, e = enc.subject_span
    assert "".join(toks[b:e]).replace("▁", " ").strip() == "The capital"
    assert b == 2 + stray  # the [Text] marker (and a stray ▁) shift the subject by one (two)
    # a subject glued to "'s" and in mid-prompt
    enc = t2t_encode(tok, "Apple's city is in France", "Apple", stray_space=stray, first_word_space=first_word_space)
    toks = tok.convert_ids_to_tokens(enc.input_ids)
    b, e = enc.subject_span
    assert "".join(toks[b:e]).replace("▁", "") == "Apple"
    enc = t2t_encode(tok, "The city of Rome is", "Rome", stray_space=stray, first_word_space=first_word_space)
    assert tok.convert_ids_to_tokens(enc.input_ids[enc.subject_span[0] : enc.subject_span[1]]) == ["▁Rome"]


def test_text_bad_words():
    flat = [w[0] for w in TEXT_BAD_WORDS]
    assert flat[:3] == [32000, 32001, 32002] and flat[-1] == 32502 and len(flat) == 503
    assert all(len(w) == 1 for w in TEXT_BAD_WORDS)
    assert len(text_bad_words(32768)) == 503 + 164


def test_load_spiritlm_and_generate_text_only(ckpt, tok):
    model = load_spiritlm(ckpt["root"], dtype="float32")  # a checkpoint root also works
    assert model.get_input_embeddings().weight.shape == (32512, 64)
    ids = torch.tensor([s2t_ids([3, 4, 5])])
    out = model.generate(ids, max_new_tokens=5, do_sample=False, bad_words_ids=TEXT_BAD_WORDS, pad_token_id=2)
    new = out[0, ids.shape[1] :].tolist()
    assert new and all(t < 32000 or t > 32502 for t in new)
    bundle = load_spiritlm_bundle(ckpt["lm"], dtype="float32")
    assert bundle.dtype == torch.float32 and bundle.tokenizer("[Text]")["input_ids"] == [1, 32000]


def test_every_unit_piece_is_checked_at_load(tmp_path, ckpt):
    """All 501 [HuN] pieces and both markers must have their release ids; the error names the first mismatch."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    folder = tmp_path / "m"
    shutil.copytree(ckpt["lm"], folder)
    m = pb.ModelProto()
    m.ParseFromString((folder / "tokenizer.model").read_bytes())
    # swap [Hu337] and [Hu338]: every other piece is still right, and a 3-piece probe would not notice
    a, b = m.pieces[32002 + 337], m.pieces[32002 + 338]
    a.piece, b.piece = b.piece, a.piece
    (folder / "tokenizer.model").write_bytes(m.SerializeToString())
    with pytest.raises(ModelLoadError, match=r"piece '\[Hu337\]' has id 32340, expected 32339"):
        load_spiritlm_tokenizer(folder)


def test_load_errors(tmp_path, ckpt):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_spiritlm(tmp_path / "none")
    bad = tmp_path / "m"
    shutil.copytree(ckpt["lm"], bad)
    (bad / "pytorch_model.bin").unlink()
    with pytest.raises(ModelLoadError, match=r"missing SpiritLM file\(s\): pytorch_model.bin"):
        load_spiritlm(bad)
    shutil.copy(ckpt["lm"] / "pytorch_model.bin", bad / "pytorch_model.bin")
    (bad / "tokenizer.model").unlink()
    with pytest.raises(ModelLoadError, match=r"missing SpiritLM file\(s\): tokenizer.model"):
        load_spiritlm_tokenizer(bad)
    shutil.copy(ckpt["tokenizer_model"], bad / "tokenizer.model")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["vocab_size"] = 32000
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="vocab_size 32000 is not a SpiritLM size"):
        load_spiritlm(bad)


@pytest.mark.parametrize("legacy", [True, False])
def test_convention_does_not_depend_on_tokenizer_config_legacy(tmp_path, ckpt, tok, legacy):
    """The loader pins legacy=False, so a real tokenizer_config.json with ``legacy: true`` changes nothing."""
    folder = tmp_path / "m"
    shutil.copytree(ckpt["lm"], folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["legacy"] = legacy
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    other = load_spiritlm_tokenizer(folder)
    assert t2t_encode(other, "The capital of France is").input_ids == t2t_encode(tok, "The capital of France is").input_ids
