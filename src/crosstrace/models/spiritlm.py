"""SpiritLM base 7B as a plain Llama: loading, tokenizer, and T→T / S→T prompt ids.

Written from the facts in docs/spiritlm.md and transformers (Apache-2.0); no SpiritLM code.

Token ids (fixed by the release): BOS 1, ``▁`` 29871, ``[Text]`` 32000, ``[Speech]`` 32001,
``[Hu0]``..``[Hu500]`` 32002..32502 (id = 32002 + unit). SpiritLM tokenizes each whole prompt string with
the slow SentencePiece ``LlamaTokenizer`` of transformers 4.x, whose dummy prefix puts a ``▁`` right after
BOS; the paper's numbers come from those ids, and they are the default here:

- T→T ``[Text]<text>`` → ``[1, 29871, 32000, <text pieces>]``; the first word right after ``[Text]``
  has no ``▁`` (``[Text]The`` → ``The``), as SentencePiece writes text after a user-defined piece;
- S→T ``[Speech][Hu..]…[Text]`` → ``[1, 29871, 32001, 32002+u…, 32000]`` (built directly from the
  units, never through the tokenizer, so unit positions cannot depend on tokenizer behaviour).

tests/test_spiritlm_golden_ids.py checks both against ids produced by that reference tokenizer class and
version. ``stray_space=False`` drops the ``▁`` (``[1, 32000, …]``): every position moves by one, a
deviation from the reference kept for comparison. ``first_word_space=True`` writes the first word as
``▁The`` (how the model itself writes text after ``[Text]``), also not the reference.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from crosstrace.models.loading import (
    DTYPES,
    LoadedModel,
    ModelLoadError,
    _weight_errors,
    own_memory,
    refused_pickle,
    resolve_device,
    safetensors_hint,
)
from crosstrace.models.speech_family import AudioGrid, LMInput, SpokenPrompt
from crosstrace.spans import Encoded, SpanError, subject_token_span

BOS_ID = 1
TEXT_ID = 32000
SPEECH_ID = 32001
HU0_ID = 32002
N_HU = 501  # [Hu0]..[Hu500]
HU_LAST_ID = HU0_ID + N_HU - 1  # 32502
SPACE_PIECE = "▁"  # id 29871 in Llama-2
SPACE_ID = 29871
#: SpiritLM's reference ids carry the ``▁`` after BOS (see the module docstring)
STRAY_SPACE_DEFAULT = True
TEXT_MARKER, SPEECH_MARKER = "[Text]", "[Speech]"
VOCAB_SIZES = {32512: "base", 32768: "expressive"}
EXPRESSIVE_EXTRA = range(32503, 32667)  # [Pi0]..[Pi63], [St0]..[St99]

LM_SUBDIR = Path("spiritlm_model") / "spirit-lm-base-7b"
REQUIRED_FILES = ("config.json", "tokenizer.model")
WEIGHT_FILES = ("pytorch_model.bin", "model.safetensors")

#: ids forbidden when the model must answer in text (base model): the markers and every [Hu] unit.
TEXT_FORBIDDEN_IDS: tuple[int, ...] = (TEXT_ID, SPEECH_ID, *range(HU0_ID, HU_LAST_ID + 1))
#: the same as ``bad_words_ids`` for ``model.generate`` / :func:`crosstrace.filtering.greedy_continuations`.
TEXT_BAD_WORDS: list[list[int]] = [[i] for i in TEXT_FORBIDDEN_IDS]


def text_bad_words(vocab_size: int = 32512) -> list[list[int]]:
    """``bad_words_ids`` for text output; the expressive model (32768 rows) also bans pitch/style tokens."""
    extra = list(EXPRESSIVE_EXTRA) if vocab_size == 32768 else []
    return TEXT_BAD_WORDS + [[i] for i in extra]


# ------------------------------------------------------------------------------------------- loading


def resolve_spiritlm_folder(folder: str | Path) -> Path:
    """The HF folder itself, or a checkpoint root holding ``spiritlm_model/spirit-lm-base-7b``."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise ModelLoadError(f"SpiritLM folder does not exist: {folder}")
    if not (folder / "config.json").exists() and (folder / LM_SUBDIR / "config.json").exists():
        folder = folder / LM_SUBDIR
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        raise ModelLoadError(f"{folder}: missing SpiritLM file(s): {', '.join(missing)}")
    return folder


def _check_vocab(folder: Path) -> int:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{folder / 'config.json'}: cannot be read: {e}") from e
    v = cfg.get("vocab_size")
    if v not in VOCAB_SIZES:
        raise ModelLoadError(
            f"{folder / 'config.json'}: vocab_size {v} is not a SpiritLM size (base 32512, expressive 32768)"
        )
    if cfg.get("model_type") != "llama":
        raise ModelLoadError(f"{folder / 'config.json'}: model_type {cfg.get('model_type')!r}, expected 'llama'")
    return v


def load_spiritlm(folder: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = "bfloat16"):
    """``LlamaForCausalLM`` from a SpiritLM folder (or checkpoint root), in eval mode, no gradients."""
    from transformers import LlamaForCausalLM

    folder = resolve_spiritlm_folder(folder)
    vocab = _check_vocab(folder)
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ModelLoadError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype]
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    try:
        model = LlamaForCausalLM.from_pretrained(folder, dtype=dtype, weights_only=True)
    except pickle.UnpicklingError as e:  # its message suggests weights_only=False: never do that here
        refused = refused_pickle(f"the weights file in {folder}", e, safetensors_hint(folder))
        if refused:
            raise ModelLoadError(refused) from None
        raise ModelLoadError(f"{folder}: weights are corrupt or not a weights-only checkpoint ({type(e).__name__}); "
                             "re-download them") from None
    except _weight_errors() as e:
        raise ModelLoadError(f"could not load SpiritLM weights from {folder} ({type(e).__name__}: {e})") from e
    rows = model.get_input_embeddings().weight.shape[0]
    if rows != vocab:
        raise ModelLoadError(f"{folder}: embedding has {rows} rows but config.json says vocab_size {vocab}")
    model.to(dev).eval()
    model.requires_grad_(False)
    return model


#: every piece whose id the prompts rely on, in id order: the markers, then [Hu0]..[Hu500]
MARKER_PIECES: tuple[tuple[str, int], ...] = (
    (TEXT_MARKER, TEXT_ID), (SPEECH_MARKER, SPEECH_ID), *((f"[Hu{u}]", HU0_ID + u) for u in range(N_HU)),
)


def check_marker_pieces(tok, source: str = "tokenizer") -> None:
    """Check ``[Text]``, ``[Speech]`` and all 501 ``[Hu0]``..``[Hu500]`` against the tokenizer, in order:
    each piece must have its release id and tokenize, in context, to that single id. The error names the
    first mismatch (the units must map to ids 32002 + unit, or every S→T prompt would be wrong)."""
    for piece, want in MARKER_PIECES:
        got = tok.convert_tokens_to_ids(piece)
        if got != want:
            raise ModelLoadError(f"{source}: piece {piece!r} has id {got}, expected {want} "
                                 "(markers and units must be the release's user-defined pieces)")
    text = "".join(p for p, _ in MARKER_PIECES)
    got = tok(text, add_special_tokens=False)["input_ids"]
    got = got[1:] if got[:1] == [SPACE_ID] else got  # SentencePiece's dummy prefix, if the tokenizer adds it
    want = [i for _, i in MARKER_PIECES]
    if got != want:
        n = next((k for k, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
        piece = MARKER_PIECES[n][0] if n < len(want) else "(end)"
        raise ModelLoadError(f"{source}: the marker/unit string does not tokenize piece by piece: first mismatch at "
                             f"{piece!r} (got {got[n:n + 3]}, expected {want[n:n + 3]})")


def load_spiritlm_tokenizer(folder: str | Path):
    """The SpiritLM tokenizer from ``tokenizer.model``: BOS added, no EOS, ``legacy=False`` (pinned).

    Checks that both markers and every unit piece are single tokens with the release's ids
    (:func:`check_marker_pieces`). Prompt ids never depend on the tokenizer's own ``▁`` handling: see
    :func:`t2t_encode` and :func:`s2t_ids`.
    """
    from transformers import LlamaTokenizer

    folder = resolve_spiritlm_folder(folder)
    try:
        tok = LlamaTokenizer.from_pretrained(folder, add_bos_token=True, add_eos_token=False, legacy=False)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load the SpiritLM tokenizer from {folder}: {e}") from e
    check_marker_pieces(tok, str(folder / "tokenizer.model"))
    sid = tok.convert_tokens_to_ids(SPACE_PIECE)
    if sid != SPACE_ID:
        raise ModelLoadError(f"{folder / 'tokenizer.model'}: piece '▁' has id {sid}, expected {SPACE_ID} (Llama-2)")
    return tok


def load_spiritlm_bundle(folder: str | Path, device: str = "cpu", dtype: str = "bfloat16", name: str = "spiritlm-base-7b") -> LoadedModel:
    """Model and tokenizer together, as the engine's :class:`LoadedModel`."""
    model = load_spiritlm(folder, device, dtype)
    tok = load_spiritlm_tokenizer(folder)
    return LoadedModel(name, model, tok, next(model.parameters()).device, DTYPES[dtype])


# -------------------------------------------------------------------------------------------- prompts


def _space_id(tokenizer) -> int:
    sid = tokenizer.convert_tokens_to_ids(SPACE_PIECE)
    if sid is None or sid == getattr(tokenizer, "unk_token_id", None):
        raise ModelLoadError("tokenizer has no '▁' piece")
    return int(sid)


def s2t_ids(dedup_units: Sequence[int], stray_space: bool = STRAY_SPACE_DEFAULT, space_id: int = SPACE_ID) -> list[int]:
    """``[1, 29871, 32001, 32002+u…, 32000]`` (the reference; ``stray_space=False``: ``[1, 32001, …]``).

    Units must be 0..500."""
    units = [int(u) for u in dedup_units]
    if not units:
        raise SpanError("an S→T prompt needs at least one speech unit")
    bad = [u for u in units if not 0 <= u < N_HU]
    if bad:
        raise ValueError(f"speech units must be in 0..{N_HU - 1}, got {bad[:5]}")
    head = [BOS_ID, space_id] if stray_space else [BOS_ID]
    return head + [SPEECH_ID] + [HU0_ID + u for u in units] + [TEXT_ID]


def t2t_encode(tokenizer, prompt: str, subject: str | None = None, stray_space: bool = STRAY_SPACE_DEFAULT,
               first_word_space: bool = False) -> Encoded:
    """T→T ids for ``[Text]`` + prompt, with character offsets **into ``prompt``** (markers get (0, 0)).

    ``subject_span`` is the token range [b, e) covering the first occurrence of ``subject`` (found on
    character offsets, so "Apple's" works), or (0, 0) without a subject. See the module docstring for the
    ▁ convention and the two switches.
    """
    for marker in (TEXT_MARKER, SPEECH_MARKER, "[Hu"):
        if marker in prompt:
            raise ValueError(f"prompt contains the SpiritLM marker {marker!r}: {prompt!r}")
    if first_word_space:
        enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
        ids = [BOS_ID, TEXT_ID] + list(enc["input_ids"])
        offsets = [(0, 0), (0, 0)] + [tuple(o) for o in enc["offset_mapping"]]
    else:
        enc = tokenizer(TEXT_MARKER + prompt, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        n = len(TEXT_MARKER)
        offsets = [(0, 0) if i < 2 else (max(s - n, 0), max(e - n, 0)) for i, (s, e) in enumerate(enc["offset_mapping"])]
    if ids[:2] != [BOS_ID, TEXT_ID]:
        raise ModelLoadError(f"tokenizer gave {ids[:2]} at the start of a T→T prompt, expected [1, 32000]")
    text_ids = ids[2:]
    if any(t in (TEXT_ID, SPEECH_ID) or HU0_ID <= t <= HU_LAST_ID for t in text_ids):
        raise ValueError(f"text of {prompt!r} tokenized into marker/unit ids")
    if stray_space:
        ids.insert(1, _space_id(tokenizer))
        offsets.insert(1, (0, 0))
    return Encoded(ids, offsets, (0, 0) if subject is None else subject_token_span(prompt, subject, offsets))


# ------------------------------------------------------------------------------- the speech-family contract

#: speech tokenizer files under a SpiritLM checkpoint root (docs/spiritlm.md, "Checkpoint layout")
HUBERT_FILES = (
    Path("speech_tokenizer") / "hubert_25hz" / "mhubert_base_25hz.pt",
    Path("speech_tokenizer") / "hubert_25hz" / "L11_quantizer_500.pt",
)
#: HuBERT 25 Hz: one frame per 640 samples at 16 kHz (docs/spiritlm.md, "Speech tokenizer"); paper eq. 2's 25
UNIT_RATE = 16000 / 640


def check_spiritlm_root(root: str | Path, modalities: Sequence[str] = ("t2t",)) -> Path:
    """The SpiritLM LM folder; with ``s2t`` also the speech tokenizer files. Errors name expected paths."""
    root = Path(root).expanduser()
    if not root.exists():
        raise ModelLoadError(
            f"SpiritLM checkpoint root {root} does not exist; expected {root / LM_SUBDIR} "
            "(the $SPIRITLM_CHECKPOINTS_DIR layout, see docs/paper-run.md)"
        )
    folder = resolve_spiritlm_folder(root)
    if "s2t" in modalities:
        base = root if folder != root else root.parent.parent
        missing = [str(base / f) for f in HUBERT_FILES if not (base / f).is_file()]
        if missing:
            raise ModelLoadError(f"SpiritLM speech tokenizer file(s) missing (needed for s2t): {', '.join(missing)}")
    return folder


def speech_root(spec) -> Path:
    """The SpiritLM checkpoint root (holding speech_tokenizer/) of a spiritlm entry."""
    root = Path(spec.path).expanduser()
    if (root / "config.json").exists():  # the LM folder itself was given
        root = root.parent.parent
    return root


@dataclass
class SpiritLMSpeech(LoadedModel):
    """A loaded SpiritLM as a speech family (:mod:`crosstrace.models.speech_family`): discrete units in the
    vocabulary, so the input embeddings are those of the ids."""

    stray_space: bool = STRAY_SPACE_DEFAULT
    family: ClassVar[str] = "spiritlm"
    speech_input: ClassVar[str] = "units"
    last_token: ClassVar[dict[str, str]] = {"t2t": "the prompt's last text token", "s2t": TEXT_MARKER}

    def t2t(self, prompt: str, subject: str | None = None) -> Encoded:
        return t2t_encode(self.tokenizer, prompt, subject, stray_space=self.stray_space)

    def text_tokens(self, prompt: str, subject: str | None = None) -> Encoded:
        """The tokens after ``[Text]`` in the T→T prompt, with the subject among them (no subject: (0, 0))."""
        enc = self.t2t(prompt, subject)
        head = enc.input_ids.index(TEXT_ID) + 1
        b, e = enc.subject_span
        span = (b - head, e - head) if subject is not None else (0, 0)
        return Encoded(enc.input_ids[head:], enc.offsets[head:], span)

    def s2t(self, spoken: SpokenPrompt) -> LMInput:
        """``[BOS] (▁) [Speech] units… [Text]``; position i of the grid is unit i with its run of 25 Hz frames."""
        if spoken.units is None or spoken.run_lengths is None:
            raise SpanError("SpiritLM S→T needs the clip's deduplicated units and run lengths (the units step)")
        if len(spoken.units) != len(spoken.run_lengths):
            raise SpanError(f"{len(spoken.units)} units but {len(spoken.run_lengths)} run lengths")
        ids = s2t_ids(spoken.units, self.stray_space)
        return LMInput(ids, AudioGrid(UNIT_RATE, tuple(int(r) for r in spoken.run_lengths),
                                      ids.index(SPEECH_ID) + 1))  # the first unit follows [Speech]

    def inputs_embeds(self, inp: LMInput) -> None:
        return None  # units are tokens: the engines embed the ids

    def text_bad_words(self) -> list[list[int]]:
        """The markers and every unit (and the expressive model's pitch and style tokens)."""
        vocab = self.model.get_input_embeddings().weight.shape[0] if self.model is not None else 32512
        return text_bad_words(vocab)

    def token_labels(self, input_ids: Sequence[int], tokens: Sequence[str]) -> list[str]:
        """Units as ``[Hu17]``, the markers as ``[Text]`` / ``[Speech]``."""
        return [unit_label(int(i)) or str(t) for i, t in zip(input_ids, tokens, strict=True)]


def unit_label(i: int) -> str | None:
    """``[Hu123]`` for unit ids, ``[Text]``/``[Speech]`` for markers, else None."""
    if HU0_ID <= i <= HU_LAST_ID:
        return f"[Hu{i - HU0_ID}]"
    return {TEXT_ID: TEXT_MARKER, SPEECH_ID: SPEECH_MARKER}.get(i)


class _Family:
    """``family: spiritlm``: a checkpoint root (``$SPIRITLM_CHECKPOINTS_DIR``) or the LM folder itself."""

    name = "spiritlm"

    def prepare(self, spec) -> str:
        return str(check_spiritlm_root(spec.path, spec.modalities))

    def load(self, spec) -> SpiritLMSpeech:
        lm = load_spiritlm_bundle(spec.load_path, spec.device, spec.dtype, name=spec.name or "spiritlm")
        if lm.device.type == "cpu":
            own_memory(lm.model)
        return SpiritLMSpeech(lm.name, lm.model, lm.tokenizer, lm.device, lm.dtype, stray_space=_stray(spec))

    def with_tokenizer(self, spec, tokenizer) -> SpiritLMSpeech:
        """Prompts without weights: SpiritLM's ids need only its tokenizer."""
        return SpiritLMSpeech(spec.name, None, tokenizer, torch.device("cpu"), torch.float32, stray_space=_stray(spec))

    def speech_encoder(self, spec):
        """HuBERT 25 Hz + the quantizer from the checkpoint root (:class:`crosstrace.models.hubert.SpeechTokenizer`)."""
        from .hubert import SpeechTokenizer

        return SpeechTokenizer.from_checkpoints(speech_root(spec), device=resolve_device(spec.device))


def _stray(spec) -> bool:
    return STRAY_SPACE_DEFAULT if spec.stray_space is None else spec.stray_space


FAMILY = _Family()
