"""Real components: piper synthesis, Whisper base transcription, a tiny random HubertForCTC through the
CTC aligner, and quarantine of bad inputs. Models load once per module."""

from __future__ import annotations

import hashlib
import wave

import numpy as np
import pytest

pytest.importorskip("piper")

from crosstrace.audio import write_wav16  # noqa: E402
from crosstrace.speech.align import CTCAligner, token_times  # noqa: E402
from crosstrace.speech.pipeline import (  # noqa: E402
    align_record,
    audio_problem,
    load_audio16k,
    qc_record,
    synthesize_record,
    transcript_from_qc,
)
from crosstrace.speech.tts import Synth, TTSBackend, get_backend  # noqa: E402

VINSON = "Vinson Massif is located in the continent of"


@pytest.fixture(scope="module")
def vinson(spoken):
    return spoken(VINSON)


@pytest.fixture(scope="module")
def asr(whisper_base):
    return whisper_base


@pytest.fixture(scope="module")
def tiny_ctc():
    import torch
    from transformers import HubertConfig, HubertForCTC

    chars = ["<pad>", "|"] + list("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
    torch.manual_seed(0)
    cfg = HubertConfig(vocab_size=len(chars), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                       num_conv_pos_embedding_groups=4, pad_token_id=0)
    return CTCAligner(HubertForCTC(cfg), {c: i for i, c in enumerate(chars)}, blank_id=0)


def _md5(path):
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def test_piper_is_deterministic_16k_16bit_mono(piper, vinson, tmp_path):
    prompts = [VINSON, "The mother tongue of Danielle Darrieux is"]
    digests = []
    for run in range(2):
        for k, p in enumerate(prompts):
            path = tmp_path / f"{run}_{k}.wav"
            r = synthesize_record(piper, k, p, path)
            assert r.status == "ok" and r.backend == "piper" and r.voice == "en_US-joe-medium"
            digests.append(_md5(path))
            with wave.open(str(path)) as wf:
                assert (wf.getframerate(), wf.getsampwidth(), wf.getnchannels()) == (16000, 2, 1)
                assert wf.getnframes() == round(r.duration_s * 16000)
    assert digests[:2] == digests[2:] and digests[0] != digests[1]
    assert 2.0 < vinson.duration_s < 4.0
    # word timings: one per token, monotonic, "in the" is merged by espeak and marked inexact
    wt = vinson.word_timings
    assert [w.word for w in wt] == VINSON.split()
    assert all(a.start_s <= a.end_s <= b.start_s + 1e-9 or not b.exact for a, b in zip(wt, wt[1:], strict=False))
    assert [w.exact for w in wt] == [True, True, True, True, False, False, True, True]
    assert 0.0 < wt[0].start_s < 0.1 and wt[-1].end_s <= vinson.duration_s


def test_write_wav16_roundtrip(tmp_path):
    x = (0.5 * np.sin(np.linspace(0, 200, 16000))).astype(np.float32)
    write_wav16(tmp_path / "a.wav", x, 16000)
    y = load_audio16k(tmp_path / "a.wav")
    assert np.abs(x - y).max() < 1e-4
    with pytest.raises(ValueError):
        write_wav16(tmp_path / "b.wav", x, 22050)


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown TTS backend 'festival'.*piper"):
        get_backend("festival")


def test_optional_backends_fail_clearly_when_absent():
    import importlib.util
    import shutil

    from crosstrace.speech.tts import TTSError

    if importlib.util.find_spec("melo") is None:
        with pytest.raises(TTSError, match="MeloTTS is not installed"):
            get_backend("melotts")
    if shutil.which("espeak-ng") is None:
        with pytest.raises(TTSError, match="espeak-ng binary not found"):
            get_backend("espeak-ng")


def test_espeak_fallback_if_present():
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng binary not installed")
    s = get_backend("espeak-ng").synthesize(VINSON)
    assert s.sample_rate == 16000 and s.audio.dtype == np.float32 and s.duration_s > 1.0


def test_whisper_base_transcribes_piper_clip(asr, vinson):
    from crosstrace.speech.asr import corpus_wer, normalize_for_wer, wer

    tr = asr.transcribe(vinson.audio)
    hyp = normalize_for_wer(tr.text)
    assert hyp in {"benson masseth is located in the continent of", "benson massif is located in the continent of"}
    assert wer(VINSON, tr.text) < 0.5
    starts = [w[1] for w in tr.words]
    assert len(tr.words) == 8 and starts == sorted(starts) and all(0 <= w[3] <= 1 for w in tr.words)
    assert corpus_wer([VINSON, "a b"], [tr.text, "a b"]) == pytest.approx(wer(VINSON, tr.text) * 8 / 10)
    q = qc_record(asr, 1, VINSON, vinson.audio, max_wer=0.5, transcript=tr)
    assert q.passes_qc and q.wer == pytest.approx(wer(VINSON, tr.text))
    assert not qc_record(asr, 1, VINSON, vinson.audio, max_wer=0.0, transcript=tr).passes_qc
    tr2 = transcript_from_qc(q.transcript, q.words)  # the whisper aligner reuses the QC table's words
    assert [w[0] for w in tr2.words] == [w[0] for w in tr.words]
    w = align_record("whisper", 1, VINSON, "Vinson Massif", vinson.audio, transcript=tr2)
    assert w.status == "ok" and 0 <= w.subject_start_s < 0.1 and 0.6 < w.subject_end_s < 1.0


@pytest.mark.slow
def test_openai_whisper_on_converted_checkpoint(vinson):
    """The CTranslate2 whisper-base converted to an openai-whisper checkpoint (strict state-dict load)
    transcribes like faster-whisper float32 (identical transcripts on 20 clips when the converter was written)."""
    pytest.importorskip("whisper")
    from crosstrace.models.loading import default_cache_dir
    from crosstrace.speech.asr import WhisperASR, normalize_for_wer

    asr = WhisperASR(cache_dir=default_cache_dir(), engine="openai-whisper", cpu_threads=2, beam_size=1)
    tr = asr.transcribe(vinson.audio)
    assert normalize_for_wer(tr.text) in {"benson masseth is located in the continent of",
                                          "benson massif is located in the continent of"}
    assert [w[0] for w in tr.words][2:] == ["is", "located", "in", "the", "continent", "of"]
    assert tr.words[0][1] == 0.0 and 2.0 < tr.words[-1][2] < 2.8


def test_tiny_hubert_ctc_aligner_end_to_end(tiny_ctc, vinson):
    a = align_record("ctc", 3, VINSON, "Vinson Massif", vinson.audio, ctc=tiny_ctc)
    assert a.status == "ok", a.reason
    assert [w.word for w in a.words] == ["VINSON", "MASSIF", "IS", "LOCATED", "IN", "THE", "CONTINENT", "OF"]
    lp = tiny_ctc.log_probs(vinson.audio)
    assert lp.shape == ((len(vinson.audio) - 400) // 320 + 1, 29)  # conv stack: 25 ms window, 20 ms hop
    edges = [x for w in a.words for x in (w.start_s, w.end_s)]
    assert edges == sorted(edges) and edges[-1] <= vinson.duration_s
    assert all(0.0 < w.score <= 1.0 for w in a.words)
    assert a.subject_start_s == a.words[0].start_s and a.subject_end_s == a.words[1].end_s
    # every prompt word placed, with an anchor at the start of each letter's CTC segment
    assert [w.word for w in a.prompt_words] == VINSON.split() and all(w.placed for w in a.prompt_words)
    assert len(a.prompt_words[0].anchors) == len("Vinson") and a.prompt_words[0].anchors[0] == (0, a.words[0].start_s)
    # text-token boundaries inside "Vinson" fall on those anchors (CTC character frames)
    starts, ends = token_times(VINSON, [(0, 1), (1, 6), (6, 13)] + [(13 + 0, len(VINSON))], a.prompt_words)
    assert starts[1] == dict(a.prompt_words[0].anchors)[1] and ends == sorted(ends)
    # the spoken text (here the prompt itself) with an anchor at every letter, the subject its first 13 characters
    assert a.spoken_text == VINSON and a.spoken_subject == (0, 13)
    assert [w.anchors for w in a.spoken_words[:2]] == [w.anchors for w in a.prompt_words[:2]]


def test_ctc_aligner_from_saved_folder(tmp_path, vinson):
    """A CTC model folder as users give it (model + Wav2Vec2CTCTokenizer + feature extractor)."""
    import json

    import torch
    from transformers import HubertConfig, HubertForCTC, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor

    chars = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("ETAONIHSRDLUMWCFGYPBVKXJQZ'")
    (tmp_path / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(chars)}))
    tok = Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), pad_token="<pad>", word_delimiter_token="|")
    torch.manual_seed(1)
    cfg = HubertConfig(vocab_size=len(chars), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                       num_conv_pos_embedding_groups=4, pad_token_id=0)
    HubertForCTC(cfg).save_pretrained(tmp_path / "ctc")
    tok.save_pretrained(tmp_path / "ctc")
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(tmp_path / "ctc")
    al = CTCAligner.from_pretrained(str(tmp_path / "ctc"))
    assert al.blank_id == 0 and al.vocab["|"] == 4 and al.normalize_audio
    a = al.align(8, vinson.audio, VINSON, "continent")
    assert a.status == "ok" and [w.word for w in a.words][-2:] == ["CONTINENT", "OF"]
    assert a.words[5].end_s <= a.subject_start_s < a.subject_end_s <= a.words[7].start_s


def test_tts_aligner_uses_piper_timings(vinson):
    a = align_record("tts", 4, VINSON, "Vinson Massif", vinson.audio, word_timings=vinson.word_timings)
    assert a.status == "ok" and a.subject_start_s == vinson.word_timings[0].start_s
    merged = align_record("tts", 4, VINSON, "the continent", vinson.audio, word_timings=vinson.word_timings)
    assert merged.status == "quarantined" and "merged" in merged.reason  # "in the" is one group
    inside = align_record("tts", 4, VINSON, "located in the continent", vinson.audio, word_timings=vinson.word_timings)
    assert inside.status == "ok" and inside.subject_end_s == vinson.word_timings[6].end_s
    pw = inside.prompt_words  # one per prompt word, the synthesiser's spans
    assert [(w.start_s, w.end_s) for w in pw] == [(t.start_s, t.end_s) for t in vinson.word_timings]


class _SilentTTS(TTSBackend):
    """A real (trivial) backend that returns silence: exercises the audio checks after synthesis."""

    name, voice = "silent", "none"

    def synthesize(self, text):
        return Synth(np.zeros(16000, dtype=np.float32), 16000, self.name, self.voice)


def test_bad_inputs_are_quarantined(piper, tiny_ctc, vinson, tmp_path):
    r = synthesize_record(piper, 11, "   ", tmp_path / "e.wav")
    assert r.status == "quarantined" and "known_id=11" in r.reason and "empty" in r.reason
    assert not (tmp_path / "e.wav").exists()
    s = synthesize_record(_SilentTTS(), 12, VINSON, tmp_path / "s.wav")
    assert s.status == "quarantined" and "silent" in s.reason
    assert "too short" in audio_problem(vinson.audio[:800], 16000)
    assert audio_problem(vinson.audio, 16000) is None
    short = align_record("ctc", 13, VINSON, "Vinson Massif", vinson.audio[:800], ctc=tiny_ctc)
    assert short.status == "quarantined" and "known_id=13" in short.reason and "too short" in short.reason
    missing = align_record("ctc", 14, VINSON, "Mount Everest", vinson.audio, ctc=tiny_ctc)
    assert missing.status == "quarantined" and "not found" in missing.reason
    alien = align_record("ctc", 15, "東京 is located in", "東京", vinson.audio, ctc=tiny_ctc)
    assert alien.status == "quarantined" and "outside the CTC alphabet" in alien.reason
    too_long = align_record("ctc", 16, VINSON * 20, "Vinson Massif", vinson.audio[:4000], ctc=tiny_ctc)
    assert too_long.status == "quarantined" and "cannot be aligned" in too_long.reason
    no_audio = qc_record(None, 17, VINSON, None, 0.5)
    assert not no_audio.passes_qc and "known_id=17" in no_audio.reason


def test_ctc_subject_chars_cuts_possessive(tiny_ctc, piper):
    p = "Finland's capital is"
    s = piper.synthesize(p)
    word = align_record("ctc", 21, p, "Finland", s.audio, ctc=tiny_ctc)
    tiny_ctc.subject_chars = True
    try:
        cut = align_record("ctc", 21, p, "Finland", s.audio, ctc=tiny_ctc)
    finally:
        tiny_ctc.subject_chars = False
    assert word.status == cut.status == "ok" and word.words[0].word == "FINLAND'S"
    assert cut.subject_start_s == word.subject_start_s
    assert word.words[0].start_s < cut.subject_end_s < word.subject_end_s  # "'S" is cut off
