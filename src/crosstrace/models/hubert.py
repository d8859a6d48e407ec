"""SpiritLM's base speech tokenizer: mHuBERT-25Hz (layer 11) + linear quantizer → 25 Hz units.

Our own loader, written from the facts in docs/spiritlm.md ("Speech tokenizer") and transformers'
(Apache-2.0) ``HubertModel``; no SpiritLM code. tests/test_fairseq_parity.py checks it against fairseq's own
HuBERT on a random-weight checkpoint in fairseq's format. The two pickles are read with ``torch.load(weights_only=True)``:

- ``mhubert_base_25hz.pt``: ``{model_cfg, task_cfg, model_weight, dictionaries_symbols}`` with fairseq key
  names, mapped onto ``HubertModel`` (weight-norm or batch-norm positional conv, detected from the keys);
- ``L11_quantizer_500.pt``: ``{model_cfg, model_weight}`` of Linear, LeakyReLU, Linear, LeakyReLU, Linear.

Pipeline per utterance: mono (mean of channels), resample to 16 kHz (SpiritLM's windowed-sinc resampler,
:func:`crosstrace.audio.resample_to_16k`), 100 s chunks (pieces shorter than 1280 samples dropped),
features = ``hidden_states[layer]`` (layer 11, 1-based; layers after it are not run), argmax of the quantizer, CTC-blank
filling with wrap-around, then deduplication (:mod:`crosstrace.speech.units`).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from crosstrace.audio import check_rate, resample_to_16k
from crosstrace.models.loading import ModelLoadError, load_error_text, refused_pickle

SAMPLE_RATE = 16000
CHUNK_SAMPLES = 1_600_000  # 100 s
MIN_CHUNK_SAMPLES = 1280  # 80 ms
HUBERT_LAYER = 11  # 1-based
MAX_BLANK_PASSES = 10_000

HUBERT_FILE = Path("speech_tokenizer") / "hubert_25hz" / "mhubert_base_25hz.pt"
QUANTIZER_FILE = Path("speech_tokenizer") / "hubert_25hz" / "L11_quantizer_500.pt"

_DROPPED = ("label_embs_concat", "final_proj.", "target_glu.")


class CheckpointError(ModelLoadError):
    """A speech-tokenizer checkpoint is missing, malformed, or does not fit the model it describes."""


class SpeechTokenizerError(ValueError):
    """Audio the speech tokenizer cannot turn into units."""


# ----------------------------------------------------------------------------------------------- config


def parse_conv_feature_layers(expr: str) -> list[tuple[int, int, int]]:
    """Evaluate a fairseq ``conv_feature_layers`` string such as ``"[(512,10,5)] + [(512,3,2)] * 4"`` safely.

    Only integer literals, tuples, lists, ``+`` (concatenation) and ``*`` (repetition) are accepted.
    """

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Tuple):
            return tuple(ev(e) for e in node.elts)
        if isinstance(node, ast.List):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add):
                if not (isinstance(a, list) and isinstance(b, list)):
                    raise ValueError("'+' is only allowed between lists")
                return a + b
            if isinstance(a, list) and type(b) is int:
                return a * b
            if type(a) is int and isinstance(b, list):
                return b * a
            raise ValueError("'*' is only allowed between a list and an integer")
        raise ValueError(f"unsupported element {ast.dump(node)[:60]}")

    try:
        value = ev(ast.parse(str(expr), mode="eval"))
    except (SyntaxError, ValueError) as e:
        raise ValueError(f"cannot parse conv_feature_layers {expr!r}: {e}") from None
    if not isinstance(value, list) or not value:
        raise ValueError(f"conv_feature_layers {expr!r} is not a non-empty list")
    for item in value:
        if not (isinstance(item, tuple) and len(item) == 3 and all(type(v) is int and v > 0 for v in item)):
            raise ValueError(f"conv_feature_layers {expr!r}: each layer must be (dim, kernel, stride), got {item!r}")
    return value


def receptive_field(kernels, strides) -> int:
    """Samples seen by one output frame of a conv stack: 1 + Σ (k_i − 1)·Π_{j<i} s_j."""
    r, jump = 1, 1
    for k, s in zip(kernels, strides, strict=True):
        r += (k - 1) * jump
        jump *= s
    return r


def conv_output_frames(n_samples: int, kernels, strides) -> int:
    """Frames out of the conv stack for n_samples input samples (no padding)."""
    n = n_samples
    for k, s in zip(kernels, strides, strict=True):
        n = (n - k) // s + 1
        if n <= 0:
            return 0
    return n


def hubert_config_from_cfg(model_cfg: dict, source: str = "model_cfg"):
    """``HubertConfig`` from a fairseq HuBERT ``model_cfg`` (docs/spiritlm.md, "fairseq names"); unknown keys ignored."""
    from transformers import HubertConfig

    def get(key, default):
        v = model_cfg.get(key, default)
        return default if v is None else v

    try:
        layers = parse_conv_feature_layers(get("conv_feature_layers", "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"))
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from None
    mode = get("extractor_mode", "default")
    if mode not in ("default", "layer_norm"):
        raise CheckpointError(f"{source}: extractor_mode {mode!r} is not supported (expected 'default' or 'layer_norm')")
    if get("layer_norm_first", False):
        raise CheckpointError(f"{source}: layer_norm_first=True (pre-LN encoder) is not supported; SpiritLM's mHuBERT is post-LN")
    act = get("activation_fn", "gelu")
    if act != "gelu":
        raise CheckpointError(f"{source}: activation_fn {act!r} is not supported (expected 'gelu')")
    if get("layer_type", "transformer") != "transformer":
        raise CheckpointError(f"{source}: layer_type {model_cfg.get('layer_type')!r} is not supported (expected 'transformer')")
    if int(get("pos_conv_depth", 1)) != 1:
        raise CheckpointError(f"{source}: pos_conv_depth must be 1, got {model_cfg.get('pos_conv_depth')!r}")
    return HubertConfig(
        hidden_size=int(get("encoder_embed_dim", 768)),
        num_hidden_layers=int(get("encoder_layers", 12)),
        num_attention_heads=int(get("encoder_attention_heads", 12)),
        intermediate_size=int(get("encoder_ffn_embed_dim", 3072)),
        hidden_act="gelu",
        feat_extract_activation="gelu",
        feat_extract_norm="group" if mode == "default" else "layer",
        conv_dim=[d for d, _, _ in layers],
        conv_kernel=[k for _, k, _ in layers],
        conv_stride=[s for _, _, s in layers],
        conv_bias=bool(get("conv_bias", False)),
        num_conv_pos_embeddings=int(get("conv_pos", 128)),
        num_conv_pos_embedding_groups=int(get("conv_pos_groups", 16)),
        conv_pos_batch_norm=bool(get("conv_pos_batch_norm", False)),
        do_stable_layer_norm=False,
        feat_proj_layer_norm=True,
        layer_norm_eps=1e-5,
        # inference only: no dropout, no SpecAugment, no layer drop
        hidden_dropout=0.0,
        activation_dropout=0.0,
        attention_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
        layerdrop=0.0,
        apply_spec_augment=False,
        mask_time_prob=0.0,
    )


# ---------------------------------------------------------------------------------------- key mapping


def fairseq_to_hf_key(key: str, conv_pos_batch_norm: bool) -> str | None:
    """HF ``HubertModel`` name of a fairseq key (docs/spiritlm.md, "fairseq names"); None for dropped keys.

    Raises KeyError for keys that have no place in the model.
    """
    if key.startswith(_DROPPED) or key == "mask_emb":
        return None
    p = key.split(".")
    if p[0] == "feature_extractor" and len(p) >= 5 and p[1] == "conv_layers" and p[2].isdigit():
        n, rest = p[2], p[3:]
        if rest[0] == "0" and len(rest) == 2 and rest[1] in ("weight", "bias"):
            return f"feature_extractor.conv_layers.{n}.conv.{rest[1]}"
        if rest[0] == "2" and len(rest) == 2 and rest[1] in ("weight", "bias"):  # GroupNorm ("default" mode)
            return f"feature_extractor.conv_layers.{n}.layer_norm.{rest[1]}"
        if rest[:2] == ["2", "1"] and len(rest) == 3 and rest[2] in ("weight", "bias"):  # "layer_norm" mode
            return f"feature_extractor.conv_layers.{n}.layer_norm.{rest[2]}"
        raise KeyError(key)
    if p[0] == "layer_norm" and len(p) == 2:
        return f"feature_projection.layer_norm.{p[1]}"
    if p[0] == "post_extract_proj" and len(p) == 2:
        return f"feature_projection.projection.{p[1]}"
    if p[:2] == ["encoder", "pos_conv"] and len(p) == 4:
        idx, name = p[2], p[3]
        if conv_pos_batch_norm:
            if idx == "0" and name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                return f"encoder.pos_conv_embed.batch_norm.{name}"
            if idx == "1" and name in ("weight", "bias"):
                return f"encoder.pos_conv_embed.conv.{name}"
        elif idx == "0":
            if name == "weight_g":
                return "encoder.pos_conv_embed.conv.parametrizations.weight.original0"
            if name == "weight_v":
                return "encoder.pos_conv_embed.conv.parametrizations.weight.original1"
            if name == "bias":
                return "encoder.pos_conv_embed.conv.bias"
        raise KeyError(key)
    if p[:2] == ["encoder", "layer_norm"] and len(p) == 3:
        return key
    if p[:2] == ["encoder", "layers"] and len(p) >= 5 and p[2].isdigit():
        n, rest = p[2], p[3:]
        pre = f"encoder.layers.{n}."
        if rest[0] == "self_attn" and len(rest) == 3 and rest[1] in ("q_proj", "k_proj", "v_proj", "out_proj"):
            return pre + f"attention.{rest[1]}.{rest[2]}"
        if rest[0] == "self_attn_layer_norm" and len(rest) == 2:
            return pre + f"layer_norm.{rest[1]}"
        if rest[0] == "fc1" and len(rest) == 2:
            return pre + f"feed_forward.intermediate_dense.{rest[1]}"
        if rest[0] == "fc2" and len(rest) == 2:
            return pre + f"feed_forward.output_dense.{rest[1]}"
        if rest[0] == "final_layer_norm" and len(rest) == 2:
            return pre + f"final_layer_norm.{rest[1]}"
        raise KeyError(key)
    raise KeyError(key)


def _torch_load(path: Path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad checkpoint
        refused = refused_pickle(path, e, "Re-save it once with tensors, dicts, lists, numbers and strings only: python -c "
                                 f"\"import torch; c = torch.load('{path}', weights_only=False); torch.save("
                                 "{k: c[k] for k in ('model_cfg', 'task_cfg', 'model_weight', 'dictionaries_symbols') "
                                 f"if k in c}}, '{path}.plain.pt')\" (model_cfg must then be a plain dict).")
        if refused:
            raise CheckpointError(f"cannot be read as a weights-only torch pickle: {refused}") from None
        raise CheckpointError(f"{path}: cannot be read as a weights-only torch pickle ({load_error_text(e)})") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict at top level, got {type(obj).__name__}")
    return obj


def _require(obj: dict, path: Path, keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        raise CheckpointError(f"{path}: missing top-level key(s) {missing}; found {sorted(obj)}")


def load_hubert(path: str | Path, device: str | torch.device = "cpu"):
    """Load ``mhubert_base_25hz.pt`` into a transformers ``HubertModel`` (fp32, eval mode).

    Returns ``(model, model_cfg, task_cfg)``. Every fairseq tensor must map onto a model tensor of the same
    shape and every model tensor must be filled (except the unused mask embedding); otherwise a
    :class:`CheckpointError` names the file and the key.
    """
    from transformers import HubertModel

    path = Path(path)
    obj = _torch_load(path, "HuBERT")
    _require(obj, path, ("model_cfg", "model_weight"))
    model_cfg, task_cfg = dict(obj["model_cfg"]), dict(obj.get("task_cfg") or {})
    weights = obj["model_weight"]
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: model_weight is not a state dict")
    config = hubert_config_from_cfg(model_cfg, source=f"{path}: model_cfg")
    has_bn = "encoder.pos_conv.0.running_mean" in weights
    has_wn = "encoder.pos_conv.0.weight_g" in weights
    if has_bn == has_wn:
        raise CheckpointError(
            f"{path}: cannot tell the positional conv type: expected exactly one of "
            "'encoder.pos_conv.0.running_mean' (batch norm) or 'encoder.pos_conv.0.weight_g' (weight norm)"
        )
    if bool(model_cfg.get("conv_pos_batch_norm", False)) != has_bn:
        raise CheckpointError(
            f"{path}: model_cfg conv_pos_batch_norm={model_cfg.get('conv_pos_batch_norm')!r} disagrees with the "
            f"weights ({'batch' if has_bn else 'weight'}-norm positional conv keys)"
        )
    config.conv_pos_batch_norm = has_bn
    model = HubertModel(config)
    target = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{path}: model_weight[{key!r}] is not a tensor")
        try:
            hf = fairseq_to_hf_key(key, has_bn)
        except KeyError:
            raise CheckpointError(f"{path}: unexpected key {key!r} in model_weight (no place in the HuBERT model)") from None
        if hf is None:
            continue
        if hf not in target:
            raise CheckpointError(f"{path}: key {key!r} maps to {hf!r}, which the model built from model_cfg does not have")
        if tuple(tensor.shape) != tuple(target[hf].shape):
            raise CheckpointError(
                f"{path}: key {key!r} has shape {tuple(tensor.shape)}, but model_cfg implies {tuple(target[hf].shape)} for {hf!r}"
            )
        mapped[hf] = tensor.to(target[hf].dtype)
    proj_w, proj_b = "feature_projection.projection.weight", "feature_projection.projection.bias"
    if proj_w not in mapped and config.conv_dim[-1] == config.hidden_size:
        # fairseq has no post_extract_proj when the conv width equals the encoder width: identity
        mapped[proj_w] = torch.eye(config.hidden_size)
        mapped[proj_b] = torch.zeros(config.hidden_size)
    missing = sorted(k for k in target if k not in mapped and k != "masked_spec_embed")
    if missing:
        raise CheckpointError(f"{path}: model_weight lacks tensors for {missing[:8]}{' …' if len(missing) > 8 else ''}")
    model.load_state_dict(mapped, strict=False)
    model.to(device).eval()
    model.requires_grad_(False)
    return model, model_cfg, task_cfg


# ------------------------------------------------------------------------------------------ quantizer


class LinearQuantizer(nn.Module):
    """Linear, LeakyReLU(0.01), Linear, LeakyReLU(0.01), Linear → ``vocab_size + 1`` logits (last = blank)."""

    def __init__(self, widths: list[int], vocab_size: int):
        super().__init__()
        if len(widths) != 4 or widths[-1] != vocab_size + 1:
            raise ValueError(f"quantizer widths {widths} do not end in vocab_size + 1 = {vocab_size + 1}")
        self.vocab_size = vocab_size
        self.net = nn.Sequential(
            nn.Linear(widths[0], widths[1]),
            nn.LeakyReLU(0.01),
            nn.Linear(widths[1], widths[2]),
            nn.LeakyReLU(0.01),
            nn.Linear(widths[2], widths[3]),
        )

    @property
    def blank(self) -> int:
        return self.vocab_size

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)

    def units(self, features: torch.Tensor) -> torch.Tensor:
        """Argmax unit per frame (blanks not filled). log-softmax does not change the argmax."""
        return self.net(features).argmax(dim=-1)


def load_quantizer(path: str | Path, device: str | torch.device = "cpu") -> LinearQuantizer:
    path = Path(path)
    obj = _torch_load(path, "quantizer")
    _require(obj, path, ("model_cfg", "model_weight"))
    cfg, sd = obj["model_cfg"], obj["model_weight"]
    if "vocab_size" not in cfg:
        raise CheckpointError(f"{path}: model_cfg lacks 'vocab_size'")
    expected = {f"{i}.{n}" for i in (0, 2, 4) for n in ("weight", "bias")}
    unexpected = sorted(set(sd) - expected)
    if unexpected:
        raise CheckpointError(f"{path}: unexpected key {unexpected[0]!r} in model_weight (expected only {sorted(expected)})")
    missing = sorted(expected - set(sd))
    if missing:
        raise CheckpointError(f"{path}: model_weight lacks key {missing[0]!r}")
    for i in (0, 2, 4):
        w, b = sd[f"{i}.weight"], sd[f"{i}.bias"]
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise CheckpointError(f"{path}: key '{i}.weight'/'{i}.bias' have shapes {tuple(w.shape)}/{tuple(b.shape)}, not a linear layer")
    widths = [sd["0.weight"].shape[1], sd["0.weight"].shape[0], sd["2.weight"].shape[0], sd["4.weight"].shape[0]]
    for i, (a, b) in ((2, (sd["2.weight"].shape[1], widths[1])), (4, (sd["4.weight"].shape[1], widths[2]))):
        if a != b:
            raise CheckpointError(f"{path}: key '{i}.weight' has input width {a}, but the previous layer outputs {b}")
    V = int(cfg["vocab_size"])
    if widths[-1] != V + 1:
        raise CheckpointError(f"{path}: key '4.weight' has {widths[-1]} outputs, expected vocab_size + 1 = {V + 1}")
    if "dim" in cfg and int(cfg["dim"]) != widths[0]:
        raise CheckpointError(f"{path}: key '0.weight' has input width {widths[0]}, but model_cfg dim = {cfg['dim']}")
    q = LinearQuantizer(widths, V)
    q.net.load_state_dict({k: v.float() for k, v in sd.items()})
    q.to(device).eval()
    q.requires_grad_(False)
    return q


def fill_blanks(units, blank: int, max_passes: int = MAX_BLANK_PASSES) -> np.ndarray:
    """Replace each blank by the previous frame's unit, repeatedly, with wrap-around (docs/spiritlm.md).

    Each pass replaces every blank whose predecessor (cyclically: frame 0 looks at the last frame) is
    taken from the previous pass. ``[500, 500, 4, 9]`` → ``[9, 9, 4, 9]``; an all-blank chunk stays blank.
    """
    u = np.asarray(units, dtype=np.int64).copy()
    if u.size == 0 or (u == blank).all():
        return u
    for _ in range(max_passes):
        mask = u == blank
        if not mask.any():
            break
        prev = np.roll(u, 1)
        u[mask] = prev[mask]
    return u


# ------------------------------------------------------------------------------------ speech tokenizer


@dataclass(frozen=True)
class Units:
    """Units of one utterance: per 25 Hz frame (after blank filling) and deduplicated."""

    units: list[int]
    dedup: list[int]
    run_lengths: list[int]
    n_frames: int
    chunk_frames: list[int] = field(default_factory=list)  # frames per 100 s chunk (one entry for short audio)
    n_samples: int = 0  # samples of the 16 kHz mono waveform that was encoded


def to_mono_float(audio, channel_id: int | None = None) -> np.ndarray:
    """1-D float32 waveform from (T,), (C, T) or (T, C) audio; channels are averaged unless channel_id.

    For 2-D input the channel axis is the shorter one. Integer PCM is scaled to [-1, 1].
    """
    a = np.asarray(audio)
    if np.issubdtype(a.dtype, np.unsignedinteger):
        raise SpeechTokenizerError(f"unsigned PCM ({a.dtype}) is not supported; convert to float in [-1, 1]")
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        a = a.astype(np.float64) / max(abs(info.min), info.max)
    elif not np.issubdtype(a.dtype, np.floating):
        raise SpeechTokenizerError(f"audio must be a numeric array, got dtype {a.dtype}")
    if a.ndim == 2:
        if a.shape[0] > a.shape[1]:
            a = a.T  # (T, C) -> (C, T)
        a = a[channel_id] if channel_id is not None else a.mean(axis=0)
    elif a.ndim != 1:
        raise SpeechTokenizerError(f"audio must be 1-D or 2-D (channels × samples), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise SpeechTokenizerError("audio contains NaN or infinite samples")
    return a.astype(np.float32)


def dedup_units(units: Sequence[int]) -> tuple[list[int], list[int]]:
    """Collapse runs of equal consecutive units, keeping the first of each run; also the run lengths.

    ``[5, 5, 7, 7, 7, 5]`` → ``([5, 7, 5], [2, 3, 1])``.
    """
    dedup: list[int] = []
    runs: list[int] = []
    for u in units:
        u = int(u)
        if dedup and dedup[-1] == u:
            runs[-1] += 1
        else:
            dedup.append(u)
            runs.append(1)
    return dedup, runs


class SpeechTokenizer:
    """Audio → SpiritLM base units (HuBERT 25 Hz layer 11 + linear quantizer). Runs in fp32."""

    def __init__(self, hubert_path: str | Path, quantizer_path: str | Path, layer: int = HUBERT_LAYER, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model, self.model_cfg, self.task_cfg = load_hubert(hubert_path, self.device)
        self.quantizer = load_quantizer(quantizer_path, self.device)
        cfg = self.model.config
        if not 1 <= layer <= cfg.num_hidden_layers:
            raise CheckpointError(f"{hubert_path}: feature layer {layer} is outside 1..{cfg.num_hidden_layers}")
        if self.quantizer.net[0].in_features != cfg.hidden_size:
            raise CheckpointError(
                f"{quantizer_path}: key '0.weight' expects {self.quantizer.net[0].in_features}-d features, "
                f"but {hubert_path} gives {cfg.hidden_size}-d"
            )
        rate = self.task_cfg.get("sample_rate", SAMPLE_RATE)
        if rate is not None and int(rate) != SAMPLE_RATE:
            raise CheckpointError(f"{hubert_path}: task_cfg sample_rate {rate} is not {SAMPLE_RATE}")
        if self.task_cfg.get("normalize", False):
            raise CheckpointError(
                f"{hubert_path}: task_cfg normalize=True is not supported: SpiritLM's speech tokenizer cannot run "
                "such a checkpoint (its normalisation path fails), so no reference output exists to match; "
                "the released mhubert_base_25hz.pt has normalize=False"
            )
        self.layer = layer
        # Layers after the feature layer are never run (the output is hidden_states[layer]).
        self.model.encoder.layers = self.model.encoder.layers[:layer]
        self.kernels, self.strides = list(cfg.conv_kernel), list(cfg.conv_stride)
        self.hop = math.prod(self.strides)
        self.receptive_field = receptive_field(self.kernels, self.strides)

    @classmethod
    def from_checkpoints(cls, root: str | Path, **kw) -> SpeechTokenizer:
        """From a SpiritLM checkpoint root (``$SPIRITLM_CHECKPOINTS_DIR``)."""
        root = Path(root)
        return cls(root / HUBERT_FILE, root / QUANTIZER_FILE, **kw)

    def n_frames(self, n_samples: int) -> int:
        """Frames for a 16 kHz chunk of n_samples: floor((N − R) / hop) + 1 (0 if N < R)."""
        return conv_output_frames(n_samples, self.kernels, self.strides)

    @torch.no_grad()
    def features(self, wav16k: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Layer features (frames × hidden) of one 16 kHz mono chunk."""
        x = torch.as_tensor(np.asarray(wav16k, dtype=np.float32), device=self.device)
        out = self.model(x[None], output_hidden_states=True)
        return out.hidden_states[self.layer][0]

    def chunk_units(self, wav16k: np.ndarray) -> np.ndarray:
        """Frame units of one chunk, blanks filled."""
        raw = self.quantizer.units(self.features(wav16k)).cpu().numpy()
        return fill_blanks(raw, self.quantizer.blank)

    def encode(self, audio: np.ndarray, sr: int, channel_id: int | None = None) -> Units:
        try:
            sr = check_rate(sr)
        except ValueError as e:
            raise SpeechTokenizerError(str(e)) from None
        wav = resample_to_16k(to_mono_float(audio, channel_id), sr)
        units: list[int] = []
        chunk_frames: list[int] = []
        for start in range(0, len(wav), CHUNK_SAMPLES):
            piece = wav[start : start + CHUNK_SAMPLES]
            if len(piece) < MIN_CHUNK_SAMPLES:
                continue
            u = self.chunk_units(piece)
            units.extend(int(v) for v in u)
            chunk_frames.append(len(u))
        if not units:
            raise SpeechTokenizerError(
                f"audio of {len(wav)} samples at 16 kHz ({len(wav) / SAMPLE_RATE:.3f} s) gives zero units "
                f"(chunks shorter than {MIN_CHUNK_SAMPLES} samples are dropped)"
            )
        dedup, runs = dedup_units(units)
        return Units(units, dedup, runs, len(units), chunk_frames, len(wav))

    def encode_file(self, path: str | Path, channel_id: int | None = None) -> Units:
        """Read an audio file with soundfile (float32 in [-1, 1]) and encode it."""
        import soundfile as sf

        path = Path(path)
        if not path.is_file():
            raise SpeechTokenizerError(f"audio file not found: {path}")
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
        return self.encode(data.T, sr, channel_id)
