"""The speech-family contract (crosstrace.models.speech_family) and SpiritLM as its discrete implementation: the
family is found by name, and its T→T / S→T inputs, audio grid, noise basis and last token are exactly what the
existing SpiritLM code builds."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from crosstrace.config import ModelSpec
from crosstrace.models import spiritlm as slm
from crosstrace.models.family import load, prepare
from crosstrace.models.loading import ModelLoadError
from crosstrace.models.speech_family import (
    AudioGrid,
    AudioInputError,
    LMInput,
    SpeechLM,
    SpokenPrompt,
    input_embeddings,
    module_name,
    speech_family,
)
from crosstrace.spans import SpanError
from crosstrace.speech.prompts import prompt_text_tokens
from crosstrace.speech.units import frames_to_dedup_positions, seconds_to_frames, unit_offset
from crosstrace.trace.noise import embedding_std, vectors_std

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPT, SUBJECT = "The capital of France is", "France"
DEDUP, RUNS = [5, 7, 9, 5], [2, 3, 2, 3]  # frames [5,5,7,7,7,9,9,5,5,5] at 25 Hz


@pytest.fixture(scope="module")
def spirit(ckpt):
    spec = ModelSpec.from_dict({"name": "tiny-spirit", "family": "spiritlm", "path": str(ckpt["root"]),
                                "modalities": ["t2t", "s2t"], "dtype": "float32"})
    return load(replace(spec, resolved=prepare(spec)))


def test_families_are_modules_found_by_name():
    assert module_name("qwen2-audio") == "crosstrace.models.qwen2_audio"
    assert speech_family("spiritlm") is slm.FAMILY and speech_family("spiritlm").name == "spiritlm"
    with pytest.raises(ModelLoadError, match=r"^no speech family 'nope': expected a module crosstrace.models.nope$"):
        speech_family("nope")
    with pytest.raises(ModelLoadError, match="defines no FAMILY"):
        speech_family("adapter")  # a module of the package that is not a family


def test_audio_grid():
    g = AudioGrid(25.0, tuple(RUNS), 3)
    assert (g.n_positions, g.n_frames, g.seconds, list(g.positions)) == (4, 10, 0.4, [3, 4, 5, 6])
    g.check_inside(0.0, 0.5)  # a span running past the end is clipped by eq. 2, not refused
    with pytest.raises(AudioInputError, match=r"\[0.400, 0.500\) s starts after the last real audio frame"):
        g.check_inside(0.4, 0.5)
    with pytest.raises(ValueError):
        AudioGrid(25.0, (), 0)
    with pytest.raises(ValueError):
        AudioGrid(0.0, (1,), 0)
    assert "run_lengths" not in repr(AudioGrid(25.0, (1,) * 750, 1))  # 750 positions stay a short line


def test_spiritlm_implements_the_contract(spirit):
    assert isinstance(spirit, SpeechLM) and spirit.family == "spiritlm" and spirit.speech_input == "units"
    assert spirit.stray_space is slm.STRAY_SPACE_DEFAULT
    assert spirit.last_token["s2t"] == "[Text]"


def test_spiritlm_t2t_and_text_tokens_are_the_existing_ones(spirit):
    assert spirit.t2t(PROMPT, SUBJECT) == slm.t2t_encode(spirit.tokenizer, PROMPT, SUBJECT)
    text = spirit.text_tokens(PROMPT, SUBJECT)
    ref = prompt_text_tokens(spirit.tokenizer, PROMPT, SUBJECT)
    assert (text.input_ids, text.offsets, text.subject_span) == (ref.ids, ref.offsets, ref.subject)


def test_spiritlm_s2t_grid_is_eq2_of_the_units(spirit):
    inp = spirit.s2t(SpokenPrompt(units=DEDUP, run_lengths=RUNS))
    assert inp.input_ids == slm.s2t_ids(DEDUP) == [1, 29871, 32001, 32007, 32009, 32011, 32007, 32000]
    assert inp.audio == AudioGrid(25.0, tuple(RUNS), unit_offset(inp.input_ids))
    assert inp.last == len(inp.input_ids) - 1 and inp.input_ids[inp.last] == slm.TEXT_ID  # S→T's last token
    # the grid's rate, runs and offset give the positions the existing eq. 2 code gives
    d0, d1 = frames_to_dedup_positions(*seconds_to_frames(0.10, 0.22, sum(RUNS)), RUNS)
    assert (unit_offset(inp.input_ids) + d0, unit_offset(inp.input_ids) + d1) == (4, 6)
    assert list(inp.audio.positions) == [3, 4, 5, 6]
    assert spirit.inputs_embeds(inp) is None  # discrete: the engines embed the ids
    with pytest.raises(SpanError, match="needs the clip's deduplicated units"):
        spirit.s2t(SpokenPrompt(samples=None))


def test_noise_basis_is_the_input_embeddings_at_the_span(spirit):
    """One definition for both families: the input embeddings at the corrupted positions. For SpiritLM these are
    the embedding rows of the subject's unit ids, the existing S→T basis, to the last bit."""
    inp = spirit.s2t(SpokenPrompt(units=DEDUP, run_lengths=RUNS))
    x = input_embeddings(spirit, inp)
    assert torch.equal(x, spirit.model.get_input_embeddings().weight[torch.tensor(inp.input_ids)])
    assert vectors_std([x[4:6]]) == embedding_std(spirit.model.get_input_embeddings(), [inp.input_ids[4:6]])
    assert isinstance(LMInput([1, 2]).last, int)
