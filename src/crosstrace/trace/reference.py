"""The plain causal-tracing algorithm (ROME's ``trace_with_patch``), kept small and obviously right.

As in ROME, every forward pass carries the clean prompt in row 0 and the S corrupted copies in rows
1..S; a restoration copies row 0's output at (site, token) into the other rows. A prompt of T tokens
costs 2 + T·L forward passes of batch S + 1 per kind. It is the reference the fast engine is tested
and benchmarked against.
"""

from __future__ import annotations

import torch

from ..models.adapter import Adapter, hooks, site_name, window_layers
from .state import Corruption, KindTrace


def rome_inputs(adapter: Adapter, input_ids: torch.Tensor, corruption: Corruption) -> torch.Tensor:
    """ROME's batch: row 0 is the clean prompt, rows 1..S add ν·ε to the subject embeddings."""
    b, e = corruption.span
    x = adapter.embed(input_ids[None]).repeat(corruption.noise.shape[0] + 1, 1, 1)
    x[1:, b:e] += corruption.noise.to(x.device, x.dtype)
    return x


def trace_with_patch(model, adapter: Adapter, embeds: torch.Tensor, answer_id: int, states: list[tuple[str, int]]) -> torch.Tensor:
    """Mean P[o] over the corrupted rows, with each (site, token t) output restored from the clean row 0."""

    def restore(tokens: list[int]):
        def fn(out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            for t in tokens:
                out[1:, t] = out[0, t]
            return out

        return fn

    by_site: dict[str, list[int]] = {}
    for site, t in states:
        by_site.setdefault(site, []).append(t)
    with hooks(adapter, {site: restore(ts) for site, ts in by_site.items()}):
        logits = model(inputs_embeds=embeds).logits[1:, -1]
    return logits.float().softmax(-1)[:, answer_id].double().mean()


@torch.no_grad()
def trace_reference(model, adapter: Adapter, input_ids: torch.Tensor, corruption: Corruption, kinds: tuple[str, ...], window: int) -> dict[str, KindTrace]:
    L, T = adapter.num_layers, input_ids.shape[0]
    x = rome_inputs(adapter, input_ids, corruption)
    clean_logits = model(inputs_embeds=x[:1]).logits[0, -1].float()
    answer_id = int(clean_logits.argmax())
    p_clean = float(clean_logits.softmax(-1)[answer_id])
    p_corr = float(trace_with_patch(model, adapter, x, answer_id, []))
    out = {}
    for kind in kinds:
        p_restored = torch.empty(T, L, dtype=torch.float64)
        for t in range(T):
            for layer in range(L):
                states = [(site_name(kind, k), t) for k in window_layers(layer, L, kind, window)]
                p_restored[t, layer] = trace_with_patch(model, adapter, x, answer_id, states)
        out[kind] = KindTrace(kind, answer_id, p_clean, p_corr, p_restored.numpy())
    return out
