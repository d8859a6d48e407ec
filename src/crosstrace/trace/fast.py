"""Exact fast causal tracing for Llama-family models.

Same numbers as :mod:`crosstrace.trace.reference` (to float tolerance), about 4-6× fewer
multiply-accumulates (``crosstrace.trace.cost.matmul_macs`` counts both; a test checks the count against
torch's FLOP counter). Each saving rests on a property of a causal decoder:

1. *Run clean and corrupted once.* Both runs are shared by all kinds; we keep each block's input, its
   attention and MLP outputs (clean) and the keys/values of every layer (corrupted).
2. *Tokens before the subject are never corrupted.* Their clean and corrupted states are equal, so
   restoring them is a no-op: IE ≡ 0 there and nothing is computed.
3. *A restoration at (token t, first patched layer a) leaves every state below block a, and every token
   before t, equal to the corrupted run* (causal attention: earlier tokens never see later ones).
   So a restored run starts from the cached corrupted block inputs of tokens t..T-1 and attends to the
   cached corrupted keys/values of tokens < t. In block a itself only token t changes (its other
   tokens read corrupted inputs), so that block is evaluated at token t alone and the batch starts at
   block a + 1. Only the positions that predict the answer need logits (the last one; the last n for
   an n-token answer), so the last block projects queries, attention output and MLP there only.
4. *Batching.* All restorations at one token t (every layer, every noise draw) run together. They are
   ordered by start block and join the batch when it reaches their block, so no row computes a block
   it would discard. Batches are split to respect ``max_rows`` (below one restoration's draws, the draws
   are split too; an out-of-memory error halves it, :mod:`crosstrace.trace.backoff`).

What stays is a floor for any exact method: each restoration changes every state of tokens t..T-1 in
every block after a, and each of those reaches the last position's output. For the Known prompts, whose
subject mostly starts at token 0, that is 4.6× less work than the plain algorithm (docs/performance.md).

An n-token answer (``trace.answer: attribute_full``) is teacher-forced exactly as in the reference: its
first n - 1 tokens follow the prompt in every run (the runner covers T + n - 1 positions; they are never
corrupted or restored) and restorations range over the prompt's T tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models.adapter import Adapter, window_layers
from .state import Corruption, KindTrace, answer_prob, clean_embeds

FAST_MODEL_TYPES = {"llama", "mistral", "qwen2"}


def supports_fast(model) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) in FAST_MODEL_TYPES


def _join_past(past: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Prepend fixed past keys/values to a batch's new ones.

    ``past`` holds one (samples, kv heads, t, dim) block per noise draw; the batch has ``groups`` items
    of ``samples`` rows each, so the past is tiled into a preallocated buffer (one copy, no repeat + cat).
    """
    S, H, t, D = past.shape
    rows, _, q, _ = new.shape
    out = new.new_empty(rows, H, t + q, D)
    out.view(rows // S, S, H, t + q, D)[:, :, :, :t] = past[None]
    out[:, :, t:] = new
    return out


@dataclass
class _Run:
    """Per-layer states of one full run: block inputs (B,T,H), attn and mlp outputs, keys/values."""

    block_in: list[torch.Tensor]
    attn: list[torch.Tensor]
    mlp: list[torch.Tensor]
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    final: torch.Tensor  # output of the last block (B,T,H)

    def draws(self, a: int, b: int) -> _Run:
        """The same run restricted to noise draws a..b-1 (views, no copies)."""
        return _Run([x[a:b] for x in self.block_in], [x[a:b] for x in self.attn], [x[a:b] for x in self.mlp],
                    [(k[a:b], v[a:b]) for k, v in self.kv], self.final[a:b])


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaRunner:
    """Llama decoder blocks on a slice of positions, with cached past keys/values and sublayer patches.

    The arithmetic is ``LlamaDecoderLayer.forward`` written out with the model's own weights (a test
    pins it to the HF forward pass), for three reasons that matter when it runs thousands of times
    per prompt: grouped-query attention goes straight to ``scaled_dot_product_attention`` with
    ``enable_gqa`` (no ``repeat_kv`` copies), the rotary tables are computed once per prompt, and the
    last block projects queries, attention output and MLP only for the positions that predict the answer.
    """

    def __init__(self, model, adapter: Adapter, n_tokens: int, device, dtype):
        self.model, self.adapter = model, adapter
        self.inner = model.model
        self.layers = adapter.layers
        cfg = model.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
        probe = torch.zeros(1, 1, self.head_dim, device=device, dtype=dtype)
        cos, sin = self.inner.rotary_emb(probe, position_ids=torch.arange(n_tokens, device=device)[None])
        self.cos, self.sin = cos[0], sin[0]  # (T, head_dim)
        q = torch.arange(n_tokens, device=device)[:, None]
        k = torch.arange(n_tokens, device=device)[None, :]
        allowed = k <= q
        if window:  # Mistral-style sliding window: a query sees at most `window` keys back
            allowed &= (q - k) < window
        self.allowed = allowed

    def _rope(self, x: torch.Tensor, start: int) -> torch.Tensor:
        cos, sin = self.cos[start : start + x.shape[2]], self.sin[start : start + x.shape[2]]
        return x * cos + _rotate_half(x) * sin

    def _attention(self, k: int, x: torch.Tensor, start: int, past, keep, n_out: int | None) -> torch.Tensor:
        attn = self.layers[k].self_attn
        B, Tq, _ = x.shape
        xq = x[:, -n_out:] if n_out else x
        q = attn.q_proj(xq).view(B, xq.shape[1], self.n_heads, self.head_dim).transpose(1, 2)
        key = attn.k_proj(x).view(B, Tq, self.n_kv, self.head_dim).transpose(1, 2)
        val = attn.v_proj(x).view(B, Tq, self.n_kv, self.head_dim).transpose(1, 2)
        q, key = self._rope(q, start + Tq - q.shape[2]), self._rope(key, start)
        if keep is not None:
            keep.append((key, val))
        if past is not None and start > 0:
            key, val = _join_past(past[0], key), _join_past(past[1], val)
        end = start + Tq
        mask = self.allowed[end - q.shape[2] : end, :end]
        o = F.scaled_dot_product_attention(
            q, key, val, attn_mask=mask, scale=getattr(attn, "scaling", self.head_dim**-0.5),
            enable_gqa=self.n_kv != self.n_heads,
        )
        return attn.o_proj(o.transpose(1, 2).reshape(B, q.shape[2], -1))

    def block(self, k: int, h, start: int, past=None, patch_attn=None, patch_mlp=None, keep=None, keep_kv=None,
              n_out: int | None = None):
        """Block ``k`` on positions start..start+len-1 of ``h``. ``past``: keys/values of the positions
        before ``start`` (one per noise draw). ``n_out``: return only the last n_out positions (all that
        the logits need after the final block; earlier positions still feed its keys and values)."""
        layer = self.layers[k]
        a = self._attention(k, layer.input_layernorm(h), start, past, keep_kv, n_out)
        if patch_attn is not None:
            a = patch_attn(a)
        h = (h[:, -n_out:] if n_out else h) + a
        m = layer.mlp(layer.post_attention_layernorm(h))
        if patch_mlp is not None:
            m = patch_mlp(m)
        if keep is not None:
            keep.append((a, m))
        return h + m

    def full(self, embeds: torch.Tensor) -> _Run:
        """One pass over all positions keeping what restorations reuse."""
        h, block_in, sub, kv = embeds, [], [], []
        for k in range(len(self.layers)):
            block_in.append(h)
            h = self.block(k, h, 0, keep=sub, keep_kv=kv)
        return _Run(block_in, [a for a, _ in sub], [m for _, m in sub], kv, h)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.inner.norm(h))


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
            # The first patched block a changes only token t (its other positions read corrupted
            # inputs), so row t after block a is computed alone and the batch starts at block a+1.
            w = window_layers(layer, L, kind, window)
            items.append(_Item(layer, w.start + 1, frozenset(w)))
    return sorted(items, key=lambda it: it.start)


def _restore_at(runner: LlamaRunner, clean: _Run, corr: _Run, kind: str, t: int, items: list[_Item],
                answer_ids: Sequence[int]) -> torch.Tensor:
    """P[o] per item (restorations at token t) and noise draw of ``corr``, one growing batch: (L, draws)
    float64, row l for the item of layer l (rows of layers not in ``items`` are 0)."""
    S, T = corr.final.shape[0], corr.final.shape[1]  # T: positions of the run (prompt + answer tokens but the last)
    n = len(answer_ids)  # the last n positions predict the answer
    L = len(runner.layers)
    ref = corr.final
    h = ref.new_empty(0, T - t, ref.shape[2])
    active: list[_Item] = []
    pending = list(items)

    def row_t(k: int) -> torch.Tensor:
        """Token t's input to block k for restorations starting there (S rows)."""
        if kind == "hidden":
            return (clean.block_in[k][0, t] if k < L else clean.final[0, t]).expand(S, -1)
        a = k - 1  # the first patched block, evaluated at token t only
        if kind == "mlp":
            return (corr.block_in[a][:, t] + corr.attn[a][:, t]) + clean.mlp[a][0, t]
        mid = corr.block_in[a][:, t] + clean.attn[a][0, t]
        layer = runner.layers[a]
        return mid + layer.mlp(layer.post_attention_layernorm(mid))

    def join(k: int) -> None:
        nonlocal h
        new = [it for it in pending if it.start == k]
        if not new:
            return
        x = (corr.block_in[k] if k < L else corr.final)[:, t:].clone()
        x[:, 0] = row_t(k)
        if k == L:  # after the last block only the positions predicting the answer are kept
            x, h = x[:, -n:], h[:, -n:]
        h = torch.cat([h, *[x] * len(new)], dim=0)
        for it in new:
            pending.remove(it)
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
        last = k == L - 1
        # patches touch relative position 0 (token t); the last block keeps only the last n positions,
        # whose first is token t only when t is the prompt's last token (t never reaches the answer's)
        patchable = not last or t == T - n
        pa = patcher(k, clean.attn[k]) if kind == "attn" and patchable else None
        pm = patcher(k, clean.mlp[k]) if kind == "mlp" and patchable else None
        h = runner.block(k, h, t, past, patch_attn=pa, patch_mlp=pm, n_out=n if last else None)
    join(L)
    probs = answer_prob(runner.logits(h), answer_ids)
    order = torch.tensor([it.layer for it in active])
    out = torch.zeros(L, S, dtype=torch.float64)
    out[order] = probs.view(len(active), S).cpu()
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


def _draw_blocks(samples: int, max_rows: int) -> list[tuple[int, int]]:
    """Noise draws per batch: all of them, or blocks of ``max_rows`` when one item's draws do not fit."""
    return [(a, min(a + max_rows, samples)) for a in range(0, samples, max(1, max_rows))]


@torch.no_grad()
def trace_fast(
    model,
    adapter: Adapter,
    prompt: torch.Tensor,
    corruption: Corruption,
    kinds: tuple[str, ...],
    window: int,
    max_rows: int | None = 512,
    answer_ids: Sequence[int] | None = None,
) -> dict[str, KindTrace]:
    """All kinds for one prompt. ``max_rows`` caps sequences per forward (items × noise draws; below one
    item's draws, the draws are split); None derives it from free accelerator memory (:func:`auto_max_rows`).
    ``prompt``: token ids (T,) or input embeddings (T, hidden); ``answer_ids``: o's tokens (None: ROME's
    top-1, the clean run's greedy next token)."""
    L, T = adapter.num_layers, prompt.shape[0]
    b, _ = corruption.span
    n = 1 if answer_ids is None else len(answer_ids)
    x = clean_embeds(adapter, prompt, answer_ids)
    runner = LlamaRunner(model, adapter, x.shape[1], x.device, x.dtype)
    clean = runner.full(x)
    clean_logits = runner.logits(clean.final[:, -n:])
    if answer_ids is None:
        answer_ids = [int(clean_logits[0, -1].argmax())]
    p_clean = float(answer_prob(clean_logits, answer_ids)[0])
    x_star = x.repeat(corruption.noise.shape[0], 1, 1)
    x_star[:, corruption.span[0] : corruption.span[1]] += corruption.noise.to(x.device, x.dtype)
    corr = runner.full(x_star)
    p_corr = float(answer_prob(runner.logits(corr.final[:, -n:]), answer_ids).mean())
    S = x_star.shape[0]
    if max_rows is None:
        max_rows = auto_max_rows(model, x.shape[1], x.device)
    out = {}
    for kind in kinds:
        p_restored = torch.full((T, L), p_corr, dtype=torch.float64)
        items = _items(kind, L, window)
        for t in range(b, T):
            for chunk in _chunks(items, max(1, max_rows // S)):
                draws = torch.cat([_restore_at(runner, clean, corr.draws(d0, d1), kind, t, chunk, answer_ids)
                                   for d0, d1 in _draw_blocks(S, max_rows)], dim=1)
                res = draws.mean(1)  # over the noise draws
                for it in chunk:
                    p_restored[t, it.layer] = res[it.layer]
        out[kind] = KindTrace(kind, answer_ids[0], p_clean, p_corr, p_restored.numpy(), tuple(answer_ids))
    return out
