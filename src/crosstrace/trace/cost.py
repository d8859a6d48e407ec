"""What causal tracing costs in weight multiply-accumulates, per engine: the floor no implementation beats.

Counted for ROME's algorithm (the reference) and for the fast engine, per kind, from a model's shapes;
``tests/test_bench.py`` checks the counts against the work the engines really do.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models.adapter import window_layers


@dataclass(frozen=True)
class Macs:
    """Multiply-accumulates per position of each weight matrix group of a decoder and its LM head."""

    q: int  # query projection
    kv: int  # key and value projections
    o: int  # attention output projection
    mlp: int  # gate, up and down projections
    head: int

    @property
    def block(self) -> int:
        return self.q + self.kv + self.o + self.mlp

    @classmethod
    def of(cls, config) -> Macs:
        H, nh = config.hidden_size, config.num_attention_heads
        kv = getattr(config, "num_key_value_heads", None) or nh
        d = getattr(config, "head_dim", None) or H // nh
        return cls(H * nh * d, 2 * H * kv * d, nh * d * H, 3 * H * config.intermediate_size, H * config.vocab_size)


def matmul_macs(kind: str, T: int, b: int, L: int, S: int, window: int, m: Macs, n_answer: int = 1) -> tuple[int, int]:
    """(reference, fast) weight-matrix MACs for one kind on a prompt of T tokens, subject from token b.

    Reference: a clean pass (1 row) and 1 + T·L passes of S + 1 rows, each over T positions through
    L blocks and the head. Fast: clean and corrupted runs (1 + S rows; head at the last position);
    then for each token t ≥ b and layer l, S rows × (T − t) positions through the blocks after the
    first patched one, where the last block projects keys and values at every position but queries,
    output and MLP at the last one, and the head runs once per row. A windowed kind first evaluates
    its first patched block at token t alone: the ``attn`` kind runs that block's MLP there, the
    ``mlp`` kind only adds the clean MLP output. An answer of ``n_answer`` tokens (attribute_full)
    adds n_answer − 1 positions to every run, and "the last position" becomes the last n_answer.
    """
    n_ans, Tr = n_answer, T + n_answer - 1  # Tr: positions of every run
    ref = (1 + (1 + T * L) * (S + 1)) * Tr * (L * m.block + m.head)
    fast = (1 + S) * (Tr * L * m.block + n_ans * m.head)
    starts = [layer + 1 if kind == "hidden" else window_layers(layer, L, kind, window).start + 1 for layer in range(L)]
    for t in range(b, T):
        for start in starts:
            n = L - start  # blocks the batch runs
            if n > 0:
                fast += S * ((Tr - t) * ((n - 1) * m.block + m.kv) + n_ans * (m.q + m.o + m.mlp))
            fast += S * n_ans * m.head
        if kind == "attn":  # once per distinct first block (all restorations in one batch)
            fast += len(set(starts)) * S * m.mlp
    return ref, fast
