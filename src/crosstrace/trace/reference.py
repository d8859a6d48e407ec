"""The plain causal-tracing algorithm (ROME's ``trace_with_patch``), kept small and obviously right.

As in ROME, every forward pass carries the clean prompt in row 0 and the S corrupted copies in rows
1..S; a restoration copies row 0's output at (site, token) into the other rows. A prompt of T tokens
costs 2 + T·L forward passes of batch S + 1 per kind. It is the reference the fast engine is tested
and benchmarked against.

Answers of n tokens (``trace.answer: attribute_full``) are teacher-forced: o_1..o_{n-1} follow the
prompt in every run (never corrupted, never restored; restorations range over the prompt's T tokens)
and P[o] is the product of the last n positions' probabilities of o_1..o_n.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..models.adapter import Adapter, hooks, site_name, window_layers
from .state import Corruption, KindTrace, answer_prob, clean_embeds


def rome_inputs(adapter: Adapter, prompt: torch.Tensor, corruption: Corruption,
                answer_ids: Sequence[int] | None = None) -> torch.Tensor:
    """ROME's batch: row 0 is the clean prompt (token ids or input embeddings, :func:`clean_embeds`), rows 1..S
    add ν·ε to the subject's input embeddings."""
    b, e = corruption.span
    x = clean_embeds(adapter, prompt, answer_ids).repeat(corruption.noise.shape[0] + 1, 1, 1)
    x[1:, b:e] += corruption.noise.to(x.device, x.dtype)
    return x


def trace_with_patch(model, adapter: Adapter, embeds: torch.Tensor, answer_ids: Sequence[int], states: list[tuple[str, int]],
                     max_rows: int | None = None) -> torch.Tensor:
    """Mean P[o] over the corrupted rows, with each (site, token t) output restored from the clean row 0.
    ``max_rows``: corrupted rows per forward pass (each pass carries the clean row too); None: all."""

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
    S, n = embeds.shape[0] - 1, len(answer_ids)
    rows, p = max_rows or S, []
    with hooks(adapter, {site: restore(ts) for site, ts in by_site.items()}):
        for a in range(0, S, rows):  # the clean row 0 rides along in every pass
            batch = torch.cat([embeds[:1], embeds[1 + a : 1 + a + rows]])
            p.append(answer_prob(model(inputs_embeds=batch).logits[1:, -n:], answer_ids))
    return torch.cat(p).mean()


@torch.no_grad()
def trace_reference(model, adapter: Adapter, prompt: torch.Tensor, corruption: Corruption, kinds: tuple[str, ...],
                    window: int, answer_ids: Sequence[int] | None = None, max_rows: int | None = None) -> dict[str, KindTrace]:
    """``prompt``: token ids (T,) or input embeddings (T, hidden); ``answer_ids``: o's tokens (None: ROME's
    top-1, the clean run's greedy next token). ``max_rows``: corrupted rows per forward pass (None: all the
    noise draws at once)."""
    L, T = adapter.num_layers, prompt.shape[0]
    x = rome_inputs(adapter, prompt, corruption, answer_ids)
    clean_logits = model(inputs_embeds=x[:1]).logits
    if answer_ids is None:
        answer_ids = [int(clean_logits[0, -1].argmax())]
    n = len(answer_ids)
    p_clean = float(answer_prob(clean_logits[:, -n:], answer_ids)[0])
    p_corr = float(trace_with_patch(model, adapter, x, answer_ids, [], max_rows))
    out = {}
    for kind in kinds:
        p_restored = torch.empty(T, L, dtype=torch.float64)
        for t in range(T):
            for layer in range(L):
                states = [(site_name(kind, k), t) for k in window_layers(layer, L, kind, window)]
                p_restored[t, layer] = trace_with_patch(model, adapter, x, answer_ids, states, max_rows)
        out[kind] = KindTrace(kind, answer_ids[0], p_clean, p_corr, p_restored.numpy(), tuple(answer_ids))
    return out
