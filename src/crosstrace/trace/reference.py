"""The plain causal-tracing algorithm (ROME's ``trace_with_patch``), kept small and obviously right.

Every restored run recomputes the whole sequence with forward hooks, so a prompt of T tokens costs
2 + T·L forward passes per kind. It is the reference the fast engine is tested and benchmarked against.
"""

from __future__ import annotations

import torch

from ..models.adapter import Adapter, hooks, record, site_name, window_layers
from .state import Corruption, KindTrace


def corrupted_embeds(adapter: Adapter, input_ids: torch.Tensor, corruption: Corruption) -> torch.Tensor:
    """x*: the input embeddings repeated once per noise draw, plus ν·ε on the subject positions."""
    b, e = corruption.span
    x = adapter.embed(input_ids[None]).repeat(corruption.noise.shape[0], 1, 1)
    x[:, b:e] += corruption.noise.to(x.device, x.dtype)
    return x


def trace_with_patch(model, adapter: Adapter, embeds: torch.Tensor, answer_id: int, patches: dict[str, tuple[int, torch.Tensor]]) -> torch.Tensor:
    """P[o] at the last position for each row of ``embeds``, with ``site`` output at token t set to a clean value."""

    def restore(t: int, clean: torch.Tensor):
        def fn(out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            out[:, t] = clean.to(out.dtype)
            return out

        return fn

    with hooks(adapter, {site: restore(t, v) for site, (t, v) in patches.items()}):
        logits = model(inputs_embeds=embeds).logits[:, -1]
    return logits.float().softmax(-1)[:, answer_id]


@torch.no_grad()
def trace_reference(model, adapter: Adapter, input_ids: torch.Tensor, corruption: Corruption, kinds: tuple[str, ...], window: int) -> dict[str, KindTrace]:
    L, T = adapter.num_layers, input_ids.shape[0]
    sites = [site_name(k, layer) for k in ("hidden", "mlp", "attn") for layer in range(L)]
    clean_store, recording = record(adapter, sites)
    with recording:
        clean_logits = model(input_ids=input_ids[None]).logits[0, -1].float()
    answer_id = int(clean_logits.argmax())
    p_clean = float(clean_logits.softmax(-1)[answer_id])
    x_star = corrupted_embeds(adapter, input_ids, corruption)
    p_corr = float(trace_with_patch(model, adapter, x_star, answer_id, {}).mean())
    out = {}
    for kind in kinds:
        p_restored = torch.empty(T, L, dtype=torch.float64)
        for t in range(T):
            for layer in range(L):
                patches = {}
                for k in window_layers(layer, L, kind, window):
                    s = site_name(kind, k)
                    patches[s] = (t, clean_store[s][0, t])
                p_restored[t, layer] = trace_with_patch(model, adapter, x_star, answer_id, patches).mean()
        out[kind] = KindTrace(kind, answer_id, p_clean, p_corr, p_restored.numpy())
    return out
