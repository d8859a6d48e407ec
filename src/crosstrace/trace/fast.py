"""Exact fast causal tracing for Llama-family models.

Same numbers as :mod:`crosstrace.trace.reference` (to float tolerance), far fewer FLOPs. Each speed-up
rests on a property of a causal decoder:

1. *Run clean and corrupted once.* Both runs are shared by all kinds; we keep each block's input, its
   attention and MLP outputs (clean) and the keys/values of every layer (corrupted).
2. *Tokens before the subject are never corrupted.* Their clean and corrupted states are equal, so
   restoring them is a no-op: IE ≡ 0 there and nothing is computed.
3. *A restoration at (token t, first patched layer a) leaves every state below block a, and every token
   before t, equal to the corrupted run* (causal attention: earlier tokens never see later ones).
   So a restored run starts at block a with the cached corrupted block input for tokens t..T-1, and
   attends to the cached corrupted keys/values of tokens < t. Only the last position's logits are needed.
4. *Batching.* All restorations at one token t (every layer, every noise draw) run together. They are
   ordered by start block and join the batch when it reaches their block, so no row computes a block
   it would discard. Batches are split to respect ``max_rows``.

The block arithmetic below mirrors ``LlamaDecoderLayer.forward`` and calls the model's own modules
(norms, attention, MLP); a test pins it to the HF forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.adapter import Adapter, window_layers
from .state import Corruption, KindTrace

FAST_MODEL_TYPES = {"llama", "mistral", "qwen2"}


def supports_fast(model) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) in FAST_MODEL_TYPES


class _KV:
    """Minimal stand-in for an HF cache: prepends fixed past keys/values, optionally records new ones.

    ``past`` holds one (samples, heads, t, dim) block per noise draw; the batch has ``groups`` items of
    ``samples`` rows each, so the past is tiled into a preallocated buffer (one copy, no repeat + cat).
    """

    def __init__(self, past: tuple[torch.Tensor, torch.Tensor] | None = None, keep: list | None = None):
        self.past, self.keep = past, keep

    @staticmethod
    def _join(past: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        S, H, t, D = past.shape
        rows, _, q, _ = new.shape
        out = new.new_empty(rows, H, t + q, D)
        out.view(rows // S, S, H, t + q, D)[:, :, :, :t] = past[None]
        out[:, :, t:] = new
        return out

    def update(self, k, v, layer_idx, cache_kwargs=None):
        if self.keep is not None:
            self.keep.append((k, v))
        if self.past is not None and self.past[0].shape[2] > 0:
            k, v = self._join(self.past[0], k), self._join(self.past[1], v)
        return k, v


@dataclass
class _Run:
    """Per-layer states of one full run: block inputs (B,T,H), attn and mlp outputs, keys/values."""

    block_in: list[torch.Tensor]
    attn: list[torch.Tensor]
    mlp: list[torch.Tensor]
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    final: torch.Tensor  # output of the last block (B,T,H)


def _causal_mask(start: int, end: int, dtype, device) -> torch.Tensor:
    """Additive mask for queries at positions start..end-1 over keys 0..end-1."""
    q = torch.arange(start, end, device=device)[:, None]
    k = torch.arange(end, device=device)[None, :]
    mask = torch.zeros(end - start, end, dtype=dtype, device=device)
    return mask.masked_fill(k > q, torch.finfo(dtype).min)[None, None]


class LlamaRunner:
    """Runs Llama blocks on a slice of positions with cached past keys/values and sublayer patches."""

    def __init__(self, model, adapter: Adapter):
        self.model, self.adapter = model, adapter
        self.inner = model.model
        self.layers = adapter.layers

    def rotary(self, h: torch.Tensor, start: int, end: int):
        pos = torch.arange(start, end, device=h.device)[None]
        return self.inner.rotary_emb(h, position_ids=pos)

    def block(self, k: int, h, pe, mask, kv: _KV, patch_attn=None, patch_mlp=None, keep=None, last_only=False):
        """One decoder block. ``last_only``: return only the last position (all that the logits need
        after the final block; earlier positions still feed this block's keys and values)."""
        layer = self.layers[k]
        residual = h
        x = layer.input_layernorm(h)
        a = layer.self_attn(hidden_states=x, position_embeddings=pe, attention_mask=mask, past_key_values=kv)[0]
        if patch_attn is not None:
            a = patch_attn(a)
        h = residual + a
        if last_only:
            h = h[:, -1:]
        m = layer.mlp(layer.post_attention_layernorm(h))
        if patch_mlp is not None:
            m = patch_mlp(m)
        if keep is not None:
            keep.append((a, m))
        return h + m

    def full(self, embeds: torch.Tensor) -> _Run:
        """One pass over all positions keeping what restorations reuse."""
        T = embeds.shape[1]
        pe = self.rotary(embeds, 0, T)
        mask = _causal_mask(0, T, embeds.dtype, embeds.device)
        h, block_in, sub, kv = embeds, [], [], []
        for k in range(len(self.layers)):
            block_in.append(h)
            h = self.block(k, h, pe, mask, _KV(keep=kv), keep=sub)
        return _Run(block_in, [a for a, _ in sub], [m for _, m in sub], kv, h)

    def answer_probs(self, h_last: torch.Tensor, answer_id: int) -> torch.Tensor:
        logits = self.model.lm_head(self.inner.norm(h_last))
        return logits.float().softmax(-1)[..., answer_id]


@dataclass(frozen=True)
class _Item:
    """One restoration: token t, layer l (the heatmap cell), first block a, patched blocks."""

    layer: int
    start: int
    patched: frozenset


def _items(kind: str, L: int, window: int) -> list[_Item]:
    items = []
    for layer in range(L):
        if kind == "hidden":
            # Restoring the residual after block l = starting at block l+1 with a clean row t.
            items.append(_Item(layer, layer + 1, frozenset()))
        else:
            w = window_layers(layer, L, kind, window)
            items.append(_Item(layer, w.start, frozenset(w)))
    return sorted(items, key=lambda it: it.start)


def _restore_at(runner: LlamaRunner, clean: _Run, corr: _Run, kind: str, t: int, items: list[_Item], answer_id: int) -> torch.Tensor:
    """Mean P[o] over noise draws for each item (restorations at token t), one growing batch."""
    S, T = corr.final.shape[0], corr.final.shape[1]
    L = len(runner.layers)
    ref = corr.final
    pe = runner.rotary(ref, t, T)
    mask = _causal_mask(t, T, ref.dtype, ref.device)
    h = ref.new_empty(0, T - t, ref.shape[2])
    active: list[_Item] = []
    pending = list(items)

    def join(k: int) -> None:
        nonlocal h
        new = [it for it in pending if it.start == k]
        for it in new:
            pending.remove(it)
            x = (corr.block_in[k] if k < L else corr.final)[:, t:].clone()
            if kind == "hidden":
                x[:, 0] = clean.block_in[k][0, t] if k < L else clean.final[0, t]
            if k == L:  # after the last block only the last position is kept
                x, h = x[:, -1:], h[:, -1:]
            h = torch.cat([h, x], dim=0)
            active.append(it)

    def patcher(k: int, source: torch.Tensor):
        rows = [i for i, it in enumerate(active) if k in it.patched]
        if not rows:
            return None
        idx = torch.tensor([i * S + s for i in rows for s in range(S)], device=ref.device)

        def fn(out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            out[idx, 0] = source[0, t].to(out.dtype)
            return out

        return fn

    for k in range(L):
        join(k)
        if not active:
            continue
        pk, pv = corr.kv[k]
        past = (pk[:, :, :t], pv[:, :, :t])
        pa = patcher(k, clean.attn[k]) if kind == "attn" else None
        last = k == L - 1
        # patches touch relative position 0 (token t); after slicing to the last position that is
        # only still present when t is the last token
        pm = patcher(k, clean.mlp[k]) if kind == "mlp" and (not last or t == T - 1) else None
        h = runner.block(k, h, pe, mask, _KV(past), patch_attn=pa, patch_mlp=pm, last_only=last)
    join(L)
    probs = runner.answer_probs(h[:, -1], answer_id).double()
    order = torch.tensor([it.layer for it in active])
    out = torch.empty(L, dtype=torch.float64)
    out[order] = probs.view(len(active), S).mean(1).cpu()
    return out


def auto_max_rows(model, n_tokens: int, device: torch.device, cpu_rows: int = 512, budget: float = 0.5) -> int:
    """Rows per forward that fit in ``budget`` of free accelerator memory (CPU: ``cpu_rows``).

    One row of ``n_tokens`` positions holds, at its widest point inside a block, the residual stream,
    the normed input, attention projections and the MLP's gate/up activations, plus its tiled past
    keys and values; we count 6·hidden + 3·intermediate values per position, doubled for temporaries.
    """
    if device.type != "cuda":
        return cpu_rows
    cfg = model.config
    itemsize = next(model.parameters()).element_size()
    per_row = 2 * n_tokens * (6 * cfg.hidden_size + 3 * cfg.intermediate_size) * itemsize
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, int(free * budget // per_row))


def _chunks(items: list[_Item], per_chunk: int) -> list[list[_Item]]:
    return [items[i : i + per_chunk] for i in range(0, len(items), per_chunk)]


@torch.no_grad()
def trace_fast(
    model,
    adapter: Adapter,
    input_ids: torch.Tensor,
    corruption: Corruption,
    kinds: tuple[str, ...],
    window: int,
    max_rows: int | None = 512,
) -> dict[str, KindTrace]:
    """All kinds for one prompt. ``max_rows`` caps sequences per forward (items × noise draws);
    None derives it from free accelerator memory (:func:`auto_max_rows`)."""
    runner = LlamaRunner(model, adapter)
    L, T = adapter.num_layers, input_ids.shape[0]
    b, _ = corruption.span
    x = adapter.embed(input_ids[None])
    clean = runner.full(x)
    clean_probs = runner.answer_probs(clean.final[0, -1], slice(None))
    answer_id = int(clean_probs.argmax())
    p_clean = float(clean_probs[answer_id])
    x_star = x.repeat(corruption.noise.shape[0], 1, 1)
    x_star[:, corruption.span[0] : corruption.span[1]] += corruption.noise.to(x.device, x.dtype)
    corr = runner.full(x_star)
    p_corr = float(runner.answer_probs(corr.final[:, -1], answer_id).double().mean())
    S = x_star.shape[0]
    if max_rows is None:
        max_rows = auto_max_rows(model, T, x.device)
    out = {}
    for kind in kinds:
        p_restored = torch.full((T, L), p_corr, dtype=torch.float64)
        items = _items(kind, L, window)
        for t in range(b, T):
            for chunk in _chunks(items, max(1, max_rows // S)):
                res = _restore_at(runner, clean, corr, kind, t, chunk, answer_id)
                for it in chunk:
                    p_restored[t, it.layer] = res[it.layer]
        out[kind] = KindTrace(kind, answer_id, p_clean, p_corr, p_restored.numpy())
    return out
