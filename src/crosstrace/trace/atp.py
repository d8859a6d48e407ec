"""Attribution patching (AtP): every causal-tracing IE estimated to first order. APPROXIMATE.

Restoring a site h (the residual after block l, or a sublayer's output) at token t to its clean value
changes the corrupted run's P[o] by, to first order (Nanda 2023; Kramár et al. 2024, "AtP*"):

    IE(t, l) ≈ (h_clean(t, l) − h_corr(t, l)) · ∂P_corr[o] / ∂h(t, l)

one estimate per noise draw, averaged over draws as the exact IE is. One clean pass, then one forward
and one backward pass of the S corrupted rows give every site, token and draw (rows are independent,
so ∂(Σ_d P_d)/∂h_d = ∂P_d/∂h_d). Tokens before the subject have h_clean = h_corr and get IE = 0 exactly,
as in the exact engines. docs/approximation.md measures the error against exact traces.

A windowed mlp / attn cell restores several sites at once; as AtP does, its estimate is the sum of the
sites' estimates. That sum is the derivative of moving all of them towards clean together, not the
first-order term of the restoration: a restoration overwrites the later sites of the window, cutting
the paths by which an earlier one acts through them, and the sum keeps those paths. The difference is
first order (it does not vanish with small noise; tests/test_atp.py pins both facts).

Two options address where a first-order estimate fails (saturation: a restoration that moves P[o]
from near 0 to near 1 crosses a region where the gradient at the corrupted point says little):

- ``steps`` > 1 averages the gradient over inputs on the straight path from the corrupted to the clean
  embeddings (integrated gradients along the noise, as in EAP-IG, Hanna et al. 2024): noise × α for
  α = 1, 1 − 1/steps, …, 1/steps. ``steps`` = 1 is plain AtP. Costs ``steps`` times more.
- ``linearize="logodds"`` linearises log(P / (1 − P)) instead of P, then maps back through the
  sigmoid, so an estimate is always a probability. Same gradients (∂logit P = ∂P / (P(1 − P))), no cost.

:func:`graddrop` is AtP*'s GradDrop (one backward pass per layer with that layer's sublayer gradients
dropped, mean of |estimates|): unsigned, so it ranks sites by magnitude and is not an engine option.

The objective is P[o], the quantity the exact engines read (``trace.answer``): for ``top1`` the clean
run's greedy next token, picked by :func:`site_gradients` from the clean row; for ``attribute_first`` a
given token id; for ``attribute_full`` the product of the attribute tokens' probabilities, read at the
last n positions of the prompt extended by o_1..o_{n-1} (teacher forcing, exactly as in the exact
engines), with the gradients taken through that one pass. The appended tokens are never corrupted and
never restored, so estimates cover the prompt's T tokens only.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..models.adapter import Adapter, hooks, site_name, window_layers
from ..vocabulary import KINDS
from .state import Corruption, KindTrace, answer_prob, clean_embeds

LINEARIZE = ("prob", "logodds")


@dataclass(frozen=True)
class AtpConfig:
    """``steps``: gradient points from the corrupted to the clean input (1: plain AtP);
    ``linearize``: ``prob`` (the issue's formula) or ``logodds``."""

    steps: int = 1
    linearize: str = "prob"

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"atp steps must be >= 1, got {self.steps}")
        if self.linearize not in LINEARIZE:
            raise ValueError(f"atp linearize must be one of {LINEARIZE}, got {self.linearize!r}")


def _last_logits(model, x: torch.Tensor, n: int = 1) -> torch.Tensor:
    """Logits at the last ``n`` positions only (rows, n, vocab; n > 1 for a teacher-forced answer): the
    LM head over every position would cost as much as a third of the whole pass for a small model with a
    large vocabulary (SmolLM2: 49k × 576)."""
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        return model(inputs_embeds=x, logits_to_keep=n).logits[:, -n:]
    return model(inputs_embeds=x).logits[:, -n:]


def _inputs(adapter: Adapter, prompt: torch.Tensor, corruption: Corruption, steps: int,
            answer_ids: Sequence[int] | None = None) -> torch.Tensor:
    """Row 0 clean (``prompt``: token ids or input embeddings); then, for α = 1, 1 − 1/steps, …, S rows each
    with α·ν·ε on the subject. An answer of n tokens appends its first n − 1 after the prompt (teacher forcing)."""
    b, e = corruption.span
    with torch.no_grad():
        clean = clean_embeds(adapter, prompt, answer_ids)
    noise = corruption.noise.to(clean.device, clean.dtype)
    rows = [clean]
    for i in range(steps):
        x = clean.repeat(noise.shape[0], 1, 1)
        x[:, b:e] += (1 - i / steps) * noise
        rows.append(x)
    return torch.cat(rows)


def site_gradients(model, adapter: Adapter, x: torch.Tensor, sites: list[str],
                   answer_ids: Sequence[int] | None = None, drop_layer: int | None = None):
    """Row 0 of ``x`` clean, the others corrupted: one forward pass of row 0, one forward and one
    backward pass of the others.

    Returns (answer_ids, P[o] per row, {site: output}, {site: ∂P_row[o]/∂output}), outputs detached,
    gradients zero in row 0. ``answer_ids`` None: the greedy token of row 0; n tokens: ``x`` already
    carries o_1..o_{n-1} at its end (teacher forcing) and P[o] is the product over the last n positions.
    ``drop_layer``: GradDrop, the gradient does not flow back through that block's attention and MLP
    outputs (values unchanged).
    """
    n = 1 if answer_ids is None else len(answer_ids)
    kept: dict[str, torch.Tensor] = {}
    dropped = {f"attn.{drop_layer}", f"mlp.{drop_layer}"} if drop_layer is not None else set()

    def keep(site: str):
        def fn(out: torch.Tensor):
            kept[site] = out
            return out.detach() if site in dropped else None

        return fn

    edits = {s: keep(s) for s in [*sites, *sorted(dropped - set(sites))]}
    with torch.no_grad(), hooks(adapter, edits):
        clean_logits = _last_logits(model, x[:1], n)
    clean = {s: kept[s] for s in sites}
    if answer_ids is None:
        answer_ids = [int(clean_logits[0, -1].argmax())]
    answer_ids = [int(i) for i in answer_ids]
    with torch.enable_grad(), hooks(adapter, edits):
        xc = x[1:].detach().requires_grad_()  # a graph from the input even when no weight requires grad
        p = answer_prob(_last_logits(model, xc, n), answer_ids)
        grads = torch.autograd.grad(p.sum(), [kept[s] for s in sites], materialize_grads=True)
    probs = torch.cat([answer_prob(clean_logits, answer_ids), p.detach()])
    outs = {s: torch.cat([clean[s], kept[s].detach()]) for s in sites}
    grads = {s: torch.cat([torch.zeros_like(g[:1]), g]) for s, g in zip(sites, grads, strict=True)}
    return answer_ids, probs, outs, grads


def site_gradients_in_blocks(model, adapter: Adapter, x: torch.Tensor, sites: list[str],
                             answer_ids: Sequence[int] | None = None, max_rows: int | None = None):
    """:func:`site_gradients` over blocks of at most ``max_rows`` corrupted rows of ``x`` (the clean row 0
    goes with each block), joined: the same values in less memory, since rows never interact (each row's
    gradient is that of its own P[o]). None: all rows at once."""
    n = x.shape[0] - 1
    if max_rows is None or max_rows >= n:
        return site_gradients(model, adapter, x, sites, answer_ids)
    parts = []
    for a in range(0, n, max_rows):
        answer_ids, *part = site_gradients(model, adapter, torch.cat([x[:1], x[1 + a : 1 + a + max_rows]]), sites,
                                           answer_ids)
        parts.append(part)

    def join(tensors):
        return torch.cat([tensors[0][:1], *[t[1:] for t in tensors]])

    probs = join([p for p, _, _ in parts])
    outs = {s: join([o[s] for _, o, _ in parts]) for s in sites}
    grads = {s: join([g[s] for _, _, g in parts]) for s in sites}
    return answer_ids, probs, outs, grads


def _contributions(outs, grads, sites: list[str], S: int, steps: int) -> torch.Tensor:
    """(S, T, len(sites)) float64: (h_clean − h_corr) · mean over α of ∂P/∂h, per draw, token, site."""
    cols = []
    for s in sites:
        h, g = outs[s], grads[s]
        delta = (h[:1] - h[1 : 1 + S]).double()  # clean − corrupted (α = 1)
        g = g[1:].double().view(steps, S, *g.shape[1:]).mean(0)
        cols.append((delta * g).sum(-1))
    return torch.stack(cols, -1)


def _windowed(c: torch.Tensor, kind: str, window: int) -> torch.Tensor:
    """Cell (t, l) of a kind = sum of the per-layer contributions of the layers it restores."""
    L = c.shape[-1]
    if kind == "hidden":
        return c
    return torch.stack([c[..., window_layers(layer, L, kind, window)].sum(-1) for layer in range(L)], -1)


def _to_ie(first_order: torch.Tensor, p: torch.Tensor, linearize: str) -> torch.Tensor:
    """Per-draw first-order change (S, T, L) → IE per draw: directly, or through the log-odds."""
    if linearize == "prob":
        return first_order
    q = p.double().clamp(1e-12, 1 - 1e-12)[:, None, None]
    return torch.sigmoid(torch.logit(q) + first_order / (q * (1 - q))) - q


def trace_atp(model, adapter: Adapter, prompt: torch.Tensor, corruption: Corruption, kinds: tuple[str, ...],
              window: int, config: AtpConfig | None = None,
              answer_ids: Sequence[int] | None = None, max_rows: int | None = None) -> dict[str, KindTrace]:
    """AtP estimates of every kind's IE for one prompt, as KindTraces (p_restored = p_corrupted + IE).
    ``prompt``: token ids (T,) or input embeddings (T, hidden); ``answer_ids``: o's tokens (None: ROME's
    top-1, the clean run's greedy next token). ``max_rows``: corrupted rows per forward and backward pass
    (None: all, noise draws × steps)."""
    cfg = config or AtpConfig()
    L, S, T = adapter.num_layers, corruption.noise.shape[0], prompt.shape[0]
    x = _inputs(adapter, prompt, corruption, cfg.steps, answer_ids)
    sites = [site_name(kind, layer) for kind in kinds for layer in range(L)]
    answer_ids, p, outs, grads = site_gradients_in_blocks(model, adapter, x, sites, answer_ids, max_rows)
    p_clean, p_draws = float(p[0]), p[1 : 1 + S]
    p_corr = float(p_draws.double().mean())
    out = {}
    for kind in kinds:
        c = _contributions(outs, grads, [site_name(kind, layer) for layer in range(L)], S, cfg.steps)
        c = c[:, :T]  # the prompt's tokens: appended answer tokens are never restored
        ie = _to_ie(_windowed(c, kind, window), p_draws, cfg.linearize).mean(0)
        out[kind] = KindTrace(kind, answer_ids[0], p_clean, p_corr, (p_corr + ie).cpu().numpy(), tuple(answer_ids))
    return out


def graddrop(model, adapter: Adapter, prompt: torch.Tensor, corruption: Corruption, kinds: tuple[str, ...],
             window: int) -> dict[str, np.ndarray]:
    """AtP*'s GradDrop: per kind, (T, L) = 1/(L−1) Σ_j |AtP with block j's sublayer gradients dropped|,
    averaged over draws. Unsigned, L backward passes; for ranking sites by magnitude."""
    L, S = adapter.num_layers, corruption.noise.shape[0]
    x = _inputs(adapter, prompt, corruption, 1)
    sites = [site_name(kind, layer) for kind in kinds for layer in range(L)]
    answer_ids = None
    total = {kind: 0.0 for kind in kinds}
    for j in range(L):
        answer_ids, _, outs, grads = site_gradients(model, adapter, x, sites, answer_ids, drop_layer=j)
        for kind in kinds:
            c = _contributions(outs, grads, [site_name(kind, layer) for layer in range(L)], S, 1)
            total[kind] = total[kind] + _windowed(c, kind, window).abs()
    return {kind: (v / (L - 1)).mean(0).cpu().numpy() for kind, v in total.items()}


__all__ = ["KINDS", "LINEARIZE", "AtpConfig", "graddrop", "site_gradients", "site_gradients_in_blocks", "trace_atp"]
