"""Qwen2-Audio as a speech family: continuous audio embeddings at the ``<|AUDIO|>`` positions of a Qwen2 LM.

transformers' ``Qwen2AudioForConditionalGeneration`` is a Whisper-style audio encoder (``audio_tower``), a linear
projector (``multi_modal_projector``) and a Qwen2 language model. Its processor (``WhisperFeatureExtractor`` and
a Qwen2 tokenizer) writes a clip as n copies of ``<|AUDIO|>``, one per unpadded encoder output frame, and the
model puts the projected frames at those positions of the text embeddings. crosstrace builds the same merged
input embeddings with transformers' own modules (:meth:`Qwen2AudioSpeech.inputs_embeds`; a test pins them to
the model's own forward pass) and traces the Qwen2 LM on them through :func:`language_model`, a
``Qwen2ForCausalLM`` that shares the loaded weights, so the reference, fast and AtP engines run unchanged.

Prompts (:class:`Template`, one ``{prompt}`` slot):

- S→T puts the audio block at ``{prompt}``, by default the base model's layout
  ``<|audio_bos|><|AUDIO|><|audio_eos|>`` (the processor expands ``<|AUDIO|>`` to the clip's n positions);
- T→T puts the prompt text there, so both modalities share the template around the prompt;
- ``chat: true`` renders the user's message (the text around ``{prompt}``, and the audio or the prompt text)
  with the processor's chat template and the assistant's header (the instruct model).

The last token is the input's last: with the default template ``<|audio_eos|>`` for S→T and the prompt's last
text token for T→T; with text after ``{prompt}``, its last token; in chat mode the header's final newline.

Audio positions: the encoder turns 100 Hz log-mel frames (hop 160 samples at 16 kHz) into one embedding per
``conv1 stride × conv2 stride × pooling stride`` = 1·2·2 mel frames, so its output rate is
sampling rate / (hop × 4) = 25 Hz (:func:`audio_rate`, read from the modules). Only the unpadded embeddings
(transformers' ``_get_feat_extract_output_lengths`` of the clip's mel frames) are in the input; clips over
the encoder's 30 s window are refused. The workflow's speech input step (:class:`AudioPositions`, rule
``speech_units``) counts them from the processor and the encoder's length rule alone, without the weights.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..audio import resample
from ..spans import Encoded, SpanError, subject_token_span
from .loading import (
    DTYPES,
    LoadedModel,
    ModelLoadError,
    _weight_errors,
    load_error_text,
    own_memory,
    resolve_device,
)
from .speech_family import AudioGrid, AudioInputError, LMInput, SpokenPrompt

MODEL_TYPE = "qwen2_audio"
PROMPT = "{prompt}"
_SENTINEL = "\x00crosstrace-prompt\x00"  # stands for the prompt while a chat template is rendered


@dataclass(frozen=True)
class Template:
    """The text around the prompt, shared by T→T and S→T.

    ``text``: one ``{prompt}`` slot, where S→T puts the audio block and T→T the prompt text (default: nothing
    around it). ``audio``: the S→T block; None: ``<|audio_bos|><|AUDIO|><|audio_eos|>`` with the processor's
    tokens (the base model's layout). ``chat``: render the user's message with the processor's chat template
    (the instruct model); its audio item is written by the template itself, so ``audio`` must stay None.
    """

    text: str = PROMPT
    audio: str | None = None
    chat: bool = False

    def __post_init__(self):
        if self.text.count(PROMPT) != 1:
            raise ValueError(f"template text must hold {PROMPT} exactly once, got {self.text!r}")
        if self.chat and self.audio is not None:
            raise ValueError("a chat template writes the audio itself: leave template audio unset with chat: true")

    @property
    def around(self) -> tuple[str, str]:
        before, after = self.text.split(PROMPT)
        return before, after


# ------------------------------------------------------------------------------------------ audio positions


def _stride(module: torch.nn.Module) -> int:
    s = module.stride
    return int(s[0] if isinstance(s, (tuple, list)) else s)


def audio_rate(feature_extractor, audio_tower) -> float:
    """Audio positions per second: ``sampling_rate / (hop_length × conv1 stride × conv2 stride × pooling
    stride)`` (Qwen2-Audio: 16000 / (160 · 1 · 2 · 2) = 25 Hz)."""
    strides = [_stride(audio_tower.conv1), _stride(audio_tower.conv2), _stride(audio_tower.avg_pooler)]
    return feature_extractor.sampling_rate / (feature_extractor.hop_length * math.prod(strides))


def n_audio_positions(audio_tower, n_mel_frames: int) -> int:
    """Unpadded encoder outputs of a clip of ``n_mel_frames`` log-mel frames (transformers' own rule)."""
    _, n_out = audio_tower._get_feat_extract_output_lengths(torch.tensor(int(n_mel_frames)))
    return int(n_out)


def _checked_clip(samples: np.ndarray, sampling_rate: int | None, rate: int, window_samples: int) -> np.ndarray:
    """A mono float32 waveform at ``rate``, refused when it is empty, not finite or longer than the window."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1 or not x.size:
        raise AudioInputError(f"expected a non-empty mono waveform, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise AudioInputError("the clip has NaN or infinite samples")
    if sampling_rate is not None and int(sampling_rate) != rate:
        x = resample(x, int(sampling_rate), rate)
    if x.size > window_samples:
        raise AudioInputError(f"the clip is {x.size / rate:.2f} s, longer than the audio encoder's "
                              f"{window_samples / rate:g} s window (the feature extractor would cut it)")
    return x


# ------------------------------------------------------------------------------------------------ loaded model


@dataclass
class Qwen2AudioSpeech(LoadedModel):
    """A loaded Qwen2-Audio: ``model`` is its Qwen2 LM (what the engines trace), ``full`` the whole model."""

    full: Any = None
    processor: Any = None
    template: Template = field(default_factory=Template)
    family: ClassVar[str] = "qwen2-audio"
    speech_input: ClassVar[str] = "waveform"
    last_token: ClassVar[dict[str, str]] = {
        "t2t": "the input's last token: the prompt's last text token (default template)",
        "s2t": "the input's last token: <|audio_eos|> (default template)",
    }

    def __post_init__(self):
        fe, tok = self.processor.feature_extractor, self.tokenizer
        self.audio_token = self.processor.audio_token
        self.audio_token_id = int(tok.convert_tokens_to_ids(self.audio_token))
        self.rate = audio_rate(fe, self.full.model.audio_tower)
        self.window_samples = int(fe.n_samples)
        self.sampling_rate = int(fe.sampling_rate)
        block = self.template.audio or self.processor.audio_bos_token + self.audio_token + self.processor.audio_eos_token
        if not self.template.chat and block.count(self.audio_token) != 1:
            raise ValueError(f"template audio must hold the audio token {self.audio_token!r} once, got {block!r}")
        self.s2t_text = self._render(None, block)
        if self.s2t_text.count(self.audio_token) != 1:
            raise ModelLoadError(f"the S→T template renders {self.s2t_text.count(self.audio_token)} audio tokens "
                                 f"{self.audio_token!r}, expected one: {self.s2t_text!r}")
        self.t2t_around = tuple(self._render(_SENTINEL, block).split(_SENTINEL))

    def _render(self, text: str | None, block: str) -> str:
        """The template with ``text`` (None: the audio) in the prompt's place."""
        before, after = self.template.around
        if not self.template.chat:
            return before + (block if text is None else text) + after
        content = [{"type": "text", "text": before}] if before else []
        content.append({"type": "audio"} if text is None else {"type": "text", "text": text})
        content += [{"type": "text", "text": after}] if after else []
        return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                                  tokenize=False)

    # ----------------------------------------------------------------------------------------------- T→T

    def t2t(self, prompt: str, subject: str | None = None) -> Encoded:
        """T→T ids of the template with the prompt text, offsets into ``prompt`` (template characters give
        (0, 0)), and the subject's token span (found on characters, so "Apple's" works)."""
        head, tail = self.t2t_around
        enc = self.tokenizer(head + prompt + tail, return_offsets_mapping=True)
        lo, hi = len(head), len(head) + len(prompt)
        offsets = []
        for s, e in enc["offset_mapping"]:
            s, e = max(s, lo) - lo, min(e, hi) - lo
            offsets.append((s, e) if e > s else (0, 0))
        span = (0, 0) if subject is None else subject_token_span(prompt, subject, offsets)
        return Encoded(list(enc["input_ids"]), offsets, span)

    def text_tokens(self, prompt: str, subject: str | None = None) -> Encoded:
        """The tokens that carry the prompt's characters in its T→T input, with the subject among them (no
        subject: span (0, 0))."""
        enc = self.t2t(prompt, subject)
        inside = [i for i, (s, e) in enumerate(enc.offsets) if e > s]
        if not inside:
            raise SpanError(f"prompt {prompt!r} has no text token")
        i0, i1 = inside[0], inside[-1] + 1
        b, e = enc.subject_span
        return Encoded(enc.input_ids[i0:i1], enc.offsets[i0:i1], (b - i0, e - i0) if subject is not None else (0, 0))

    def text_bad_words(self) -> list[list[int]]:
        """The audio tokens: a text answer never contains them."""
        p = self.processor
        return [[int(self.tokenizer.convert_tokens_to_ids(t))] for t in (p.audio_token, p.audio_bos_token, p.audio_eos_token)]

    def token_labels(self, input_ids, tokens) -> list[str]:
        """The tokenizer's strings (the audio positions read ``<|AUDIO|>``)."""
        return [str(t) for t in tokens]

    # ----------------------------------------------------------------------------------------------- S→T

    def clip(self, samples: np.ndarray, sampling_rate: int | None = None) -> np.ndarray:
        """A mono float32 waveform at the feature extractor's rate, refused when it exceeds the encoder's window."""
        return _checked_clip(samples, sampling_rate, self.sampling_rate, self.window_samples)

    def s2t(self, spoken: SpokenPrompt | np.ndarray, sampling_rate: int | None = None) -> LMInput:
        """S→T input of a clip (a :class:`SpokenPrompt` with samples or a WAV path, or mono samples at
        ``sampling_rate``; None: already at the feature extractor's 16 kHz): ids from the processor
        (``<|AUDIO|>`` once per unpadded encoder frame), the audio grid (one frame per position at :attr:`rate`),
        and the log-mel features."""
        samples = spoken
        if isinstance(spoken, SpokenPrompt):
            wave = spoken.waveform()
            if wave is None:
                raise AudioInputError("Qwen2-Audio S→T needs the clip's waveform")
            samples, sampling_rate = wave
        x = self.clip(samples, sampling_rate)
        batch = self.processor(text=self.s2t_text, audio=x, sampling_rate=self.sampling_rate, return_tensors="pt")
        ids = [int(i) for i in batch["input_ids"][0]]
        n = n_audio_positions(self.full.model.audio_tower, int(batch["feature_attention_mask"].sum()))
        at = [i for i, t in enumerate(ids) if t == self.audio_token_id]
        if not at or at != list(range(at[0], at[0] + n)):
            raise AudioInputError(f"the processor wrote {len(at)} audio positions, not one block of the encoder's {n}")
        features = {k: batch[k] for k in ("input_features", "feature_attention_mask")}
        return LMInput(ids, AudioGrid(self.rate, (1,) * n, at[0]), features)

    @torch.no_grad()
    def audio_embeddings(self, input_features: torch.Tensor, feature_attention_mask: torch.Tensor) -> torch.Tensor:
        """(n, hidden): the projected encoder output of one clip's unpadded frames, as
        ``Qwen2AudioModel.forward`` computes it (padding frames masked out of the encoder's attention)."""
        from transformers.masking_utils import create_bidirectional_mask

        tower = self.full.model.audio_tower
        dev = tower.conv1.weight.device
        feats, mask = input_features.to(dev), feature_attention_mask.to(dev)
        conv_len, n_out = tower._get_feat_extract_output_lengths(mask.sum(-1))
        frames = (feats.shape[-1] - 2) // 2 + 1  # conv2's outputs for the padded window
        keep = (torch.arange(frames, device=dev)[None] < conv_len[:, None]).long()
        attn = create_bidirectional_mask(config=tower.config, inputs_embeds=feats.new_zeros(1, frames, 1),
                                         attention_mask=keep)
        hidden = tower(feats, attention_mask=attn).last_hidden_state
        return self.full.model.multi_modal_projector(hidden)[0, : int(n_out[0])]

    @torch.no_grad()
    def inputs_embeds(self, inp: LMInput) -> torch.Tensor | None:
        """(T, hidden): the text embeddings with the projected audio frames at the audio positions; None for
        T→T (the ids' own embeddings)."""
        if inp.features is None:
            return None
        embed = self.full.model.get_input_embeddings()
        ids = torch.tensor(inp.input_ids, device=embed.weight.device)
        x = embed(ids)
        audio = self.audio_embeddings(inp.features["input_features"], inp.features["feature_attention_mask"])
        x[ids == self.audio_token_id] = audio.to(x.dtype)
        return x


# ---------------------------------------------------------------------------------------------------- loading


def language_model(full) -> torch.nn.Module:
    """The Qwen2 LM of a loaded ``Qwen2AudioForConditionalGeneration`` as a ``Qwen2ForCausalLM`` that shares its
    modules (no copy): built on the meta device, then given the loaded decoder and LM head."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(full.config.text_config)
    lm.model = full.model.language_model
    lm.lm_head = full.lm_head
    lm.generation_config = full.generation_config
    return lm.eval()


def check_folder(path: Path) -> Path:
    """A local Qwen2-Audio folder: config.json with ``model_type: qwen2_audio``; one-line errors otherwise."""
    cfg = path / "config.json"
    if not cfg.is_file():
        raise ModelLoadError(f"{path}: no config.json, so it is not a Hugging Face model folder "
                             "(family qwen2-audio needs a Qwen2-Audio folder or hub id, e.g. Qwen/Qwen2-Audio-7B)")
    try:
        model_type = json.loads(cfg.read_text()).get("model_type")
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{cfg}: cannot be read ({e})") from None
    _check_type(model_type, path)
    return path


def _check_type(model_type: str | None, where) -> None:
    if model_type != MODEL_TYPE:
        raise ModelLoadError(f"{where}: model_type {model_type!r} is not a Qwen2-Audio model ({MODEL_TYPE!r}); "
                             "family qwen2-audio needs a folder or hub id of Qwen2-Audio (e.g. Qwen/Qwen2-Audio-7B)")


def check_processor(processor, audio_token_id: int, where) -> None:
    """The processor's audio tokens must be single tokens of its tokenizer, the audio token with the model's id."""
    for attr in ("feature_extractor", "audio_token", "audio_bos_token", "audio_eos_token"):
        if getattr(processor, attr, None) is None:
            raise ModelLoadError(f"{where}: the processor ({type(processor).__name__}) has no {attr}; "
                                 "family qwen2-audio needs Qwen2-Audio's processor from the model folder")
    vocab = processor.tokenizer.get_vocab()
    for token in (processor.audio_token, processor.audio_bos_token, processor.audio_eos_token):
        if token not in vocab:
            raise ModelLoadError(f"{where}: the processor's audio token {token!r} is missing from the tokenizer "
                                 "(use the tokenizer saved with the model)")
    if vocab[processor.audio_token] != audio_token_id:
        raise ModelLoadError(f"{where}: the tokenizer gives {processor.audio_token!r} id {vocab[processor.audio_token]}, "
                             f"but the model's config expects audio_token_id {audio_token_id}")


def load_qwen2_audio(path: str | Path, device: str = "cpu", dtype: str = "float32", name: str | None = None,
                     template: Template | None = None) -> Qwen2AudioSpeech:
    """Model and processor from the same local folder or hub id, in eval mode, without gradients."""
    from transformers import AutoConfig, AutoProcessor, Qwen2AudioForConditionalGeneration

    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    local = Path(str(path)).expanduser()
    if local.exists():
        check_folder(local)
    dev = resolve_device(device)
    try:
        _check_type(AutoConfig.from_pretrained(str(path)).model_type, path)
        processor = AutoProcessor.from_pretrained(str(path))
        full = Qwen2AudioForConditionalGeneration.from_pretrained(str(path), dtype=DTYPES[dtype], weights_only=True)
    except _weight_errors() as e:
        raise ModelLoadError(f"could not load Qwen2-Audio from {path!r} ({load_error_text(e)})") from e
    check_processor(processor, int(full.config.audio_token_id), path)
    full.to(dev).eval()
    full.requires_grad_(False)
    if dev.type == "cpu":
        own_memory(full)
    return Qwen2AudioSpeech(name or str(path), language_model(full), processor.tokenizer, dev, DTYPES[dtype],
                            full=full, processor=processor, template=template or Template())


class AudioPositions:
    """The ``speech_units`` step of Qwen2-Audio: a clip's count of audio positions, from the processor's feature
    extractor and the encoder's own length rule, without the model's weights (the encoder is built on the meta
    device from the folder's config). ``encode_file`` returns the units table's row as
    :class:`~crosstrace.models.hubert.Units`: no units, one run per audio position, the positions as frames."""

    def __init__(self, path: str | Path):
        from transformers import AutoConfig, AutoProcessor
        from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder

        try:
            config = AutoConfig.from_pretrained(str(path))
            _check_type(config.model_type, path)
            self.processor = AutoProcessor.from_pretrained(str(path))
        except _weight_errors() as e:
            raise ModelLoadError(f"could not load Qwen2-Audio's processor from {path!r} ({load_error_text(e)})") from e
        fe = self.processor.feature_extractor
        with torch.device("meta"):
            self.tower = Qwen2AudioEncoder(config.audio_config)
        self.rate = audio_rate(fe, self.tower)
        self.sampling_rate, self.window_samples = int(fe.sampling_rate), int(fe.n_samples)

    def n_positions(self, samples: np.ndarray, sampling_rate: int) -> int:
        """Unpadded audio positions of a clip (refused over the 30 s window, as :meth:`Qwen2AudioSpeech.clip`)."""
        x = _checked_clip(samples, sampling_rate, self.sampling_rate, self.window_samples)
        fe = self.processor.feature_extractor
        mask = fe(x, sampling_rate=self.sampling_rate, return_attention_mask=True, return_tensors="np")["attention_mask"]
        return n_audio_positions(self.tower, int(mask.sum()))

    def encode_file(self, path: str | Path):
        from .hubert import Units

        wave = SpokenPrompt(path=str(path)).waveform()
        n = self.n_positions(*wave)
        return Units(units=[], dedup=[], run_lengths=[1] * n, n_frames=n, chunk_frames=[], n_samples=len(wave[0]))


class _Family:
    """``family: qwen2-audio``: a local folder or a hub id, the processor from the same place."""

    name = "qwen2-audio"

    def prepare(self, spec) -> str:
        """A checked local folder (config, and the processor's audio tokens against the model's id), or a hub id."""
        path = Path(spec.path).expanduser()
        if path.exists():
            check_folder(path)
            from transformers import AutoConfig, AutoProcessor

            try:
                processor = AutoProcessor.from_pretrained(str(path))
                audio_token_id = int(AutoConfig.from_pretrained(str(path)).audio_token_id)
            except _weight_errors() as e:
                raise ModelLoadError(f"{path}: cannot load the processor ({load_error_text(e)})") from None
            check_processor(processor, audio_token_id, path)
            return str(path)
        if spec.path.startswith((".", "/", "~")):
            raise ModelLoadError(f"model path {spec.path!r} does not exist")
        return spec.path  # a hub id: loading needs the network or a populated Hugging Face cache

    def load(self, spec, template: Template | None = None) -> Qwen2AudioSpeech:
        """The entry's model with its ``template`` (the config's mapping; None: the base model's layout)."""
        if template is None and spec.template:
            template = Template(**spec.template)
        return load_qwen2_audio(spec.load_path, spec.device, spec.dtype, name=spec.name, template=template)

    def with_tokenizer(self, spec, tokenizer):
        raise ModelLoadError(f"model {spec.name!r}: Qwen2-Audio prompts need the loaded processor and template "
                             "(crosstrace.models.family.load), not a tokenizer alone")

    def speech_encoder(self, spec) -> AudioPositions:
        return AudioPositions(spec.load_path)


FAMILY = _Family()

__all__ = ["FAMILY", "MODEL_TYPE", "AudioPositions", "Qwen2AudioSpeech", "Template", "audio_rate", "check_folder",
           "check_processor", "language_model", "load_qwen2_audio", "n_audio_positions"]
