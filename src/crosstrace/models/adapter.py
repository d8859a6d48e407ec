"""Uniform names for the intervention sites of a causal LM, and scoped hooks on them.

Site names follow TransformerLens: ``resid.{l}`` is the residual stream after block ``l`` (the
"hidden" kind of causal tracing), ``attn.{l}`` and ``mlp.{l}`` are the outputs of the attention and
MLP sublayers of block ``l`` before they are added to the residual stream. The model code is never
modified: hooks are registered inside a context manager and always removed, even on error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from crosstrace.vocabulary import KINDS

_SITE_OF_KIND = {"hidden": "resid", "mlp": "mlp", "attn": "attn"}


class UnsupportedModelError(ValueError):
    pass


@dataclass(frozen=True)
class Adapter:
    """Where an architecture family keeps its embedding, blocks and sublayers."""

    family: str
    embed: nn.Module
    layers: nn.ModuleList
    attn_attr: str
    mlp_attr: str

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def module(self, site: str) -> nn.Module:
        name, _, idx = site.partition(".")
        if name == "embed":
            return self.embed
        layer = self.layers[int(idx)]
        if name == "resid":
            return layer
        if name == "attn":
            return getattr(layer, self.attn_attr)
        if name == "mlp":
            return getattr(layer, self.mlp_attr)
        raise KeyError(f"unknown site {site!r}; expected embed, resid.L, attn.L or mlp.L")


def get_adapter(model: nn.Module) -> Adapter:
    """Recognise the family by module layout (Llama/Mistral/Qwen-style or GPT-2-style)."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "layers") and hasattr(inner, "embed_tokens"):
        layer = inner.layers[0]
        if hasattr(layer, "self_attn") and hasattr(layer, "mlp"):
            return Adapter("llama", inner.embed_tokens, inner.layers, "self_attn", "mlp")
    tr = getattr(model, "transformer", None)
    if tr is not None and hasattr(tr, "h") and hasattr(tr, "wte"):
        return Adapter("gpt2", tr.wte, tr.h, "attn", "mlp")
    raise UnsupportedModelError(
        f"{type(model).__name__}: no adapter for this architecture (expected model.model.layers with self_attn/mlp "
        "or transformer.h with attn/mlp)"
    )


def site_name(kind: str, layer: int) -> str:
    if kind not in _SITE_OF_KIND:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return f"{_SITE_OF_KIND[kind]}.{layer}"


def window_layers(layer: int, num_layers: int, kind: str, window: int) -> range:
    """Layers restored together for (kind, layer): ROME's window l - w/2 ... l + w/2 - 1, clipped."""
    if kind == "hidden" or window <= 1:
        return range(layer, layer + 1)
    return range(max(0, layer - window // 2), min(num_layers, layer - (-window // 2)))


def _main_tensor(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output  # type: ignore[index]


def _replace_main(output: object, new: torch.Tensor) -> object:
    if isinstance(output, tuple):
        return (new, *output[1:])
    return new


@contextlib.contextmanager
def hooks(adapter: Adapter, edits: dict[str, Callable[[torch.Tensor], torch.Tensor | None]]) -> Iterator[None]:
    """Apply ``edits[site](output) -> new output or None`` to each named site while inside the block."""
    handles = []
    try:
        for site, fn in edits.items():

            def hook(_module, _inputs, output, fn=fn):
                new = fn(_main_tensor(output))
                return None if new is None else _replace_main(output, new)

            handles.append(adapter.module(site).register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()

