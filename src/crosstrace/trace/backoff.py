"""Out-of-memory back-off: trace a prompt again with half the rows per batch, down to one row.

A long prompt (S→T prompts run to hundreds of units) can make a batch of restored runs too large for the
accelerator. Instead of failing the shard, :func:`with_backoff` frees what the failed attempt held, halves
the rows per batch (``trace.max_rows``) and traces the prompt again from its start; when even one row does
not fit, the prompt is refused with ``out of memory at 1 row: N tokens`` (the workflow quarantines it and
the shard goes on). Each back-off is logged once, with the new batch size. The rows per batch start at the
configured value for every prompt, so a prompt's batches never depend on which prompts came before it.

Retrying the whole prompt keeps the engines free of retry logic and loses little: the largest batches
come first in every engine (fast: the first subject token has the most positions to recompute; reference
and atp: every batch has the same shape).

What a row is, per engine (each splits noise draws when the budget is below one restoration's draws):
fast, one restored sequence (a (token, layer) restoration × noise draw); reference, one corrupted sequence
beside the clean one; atp, one corrupted sequence of the forward and backward pass.

Same numbers: a row's noise comes from (seed, known_id, draw) alone and each row is computed on its own,
so the batch size changes only how rows are grouped into matrix products. The result is bit-identical
wherever the matrix kernels sum a row in the same order whatever the number of rows beside it: on the
project's CPU (MKL, one thread) for products of 4 rows or more (tests/test_oom_backoff.py). With several
threads, or fewer rows, MKL splits small products differently and P[o] moves by about 1e-7; GPU
libraries choose kernels by matrix shape, so there a backed-off prompt can differ from an unfaulted run
in the last bits of its dtype.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import TypeVar

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")

# Allocators that raise a plain RuntimeError rather than torch.OutOfMemoryError say so in the message:
# MPS ("MPS backend out of memory"), XPU and ROCm builds ("XPU out of memory", "HIP out of memory"), the CUDA
# driver behind cuBLAS ("CUDA error: out of memory", "CUBLAS_STATUS_ALLOC_FAILED") and torch's CPU
# allocator ("DefaultCPUAllocator: can't allocate memory").
OOM_MESSAGES = ("out of memory", "can't allocate memory", "cublas_status_alloc_failed")


class OutOfMemoryAtOneRow(ValueError):
    """Even one row per batch does not fit: the workflow quarantines the prompt, the CLI reports it."""


def is_out_of_memory(err: BaseException) -> bool:
    """True for an out-of-memory error of any backend: ``torch.OutOfMemoryError`` (CUDA, and XPU / MPS in
    recent torch), Python's ``MemoryError``, or a RuntimeError whose message is one of :data:`OOM_MESSAGES`."""
    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err).lower() for m in OOM_MESSAGES)


def free_memory() -> None:
    """Drop unreachable tensors and return the accelerator's cached blocks to it (no-op on CPU)."""
    gc.collect()
    if torch.accelerator.is_available():
        torch.accelerator.empty_cache()


def with_backoff(trace: Callable[[int], T], rows: int, n_tokens: int, what: str = "prompt") -> T:
    """``trace(rows)``, retried with half the rows after each out-of-memory error, down to one row.

    Raises :class:`OutOfMemoryAtOneRow` (``out of memory at 1 row: N tokens``) when one row does not fit;
    any other error passes through. ``what`` names the prompt in the log.
    """
    rows = max(1, int(rows))
    while True:
        try:
            return trace(rows)
        except Exception as err:  # noqa: BLE001 - anything but out-of-memory is re-raised
            if not is_out_of_memory(err):
                raise
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        # Outside the except block: the traceback, and the tensors its frames hold, are released by now.
        free_memory()
        if rows == 1:
            raise OutOfMemoryAtOneRow(f"out of memory at 1 row: {n_tokens} tokens")
        rows //= 2
        log.warning("%s: out of memory (%s); tracing it again with %d rows per batch", what, first_line[:200], rows,
                    extra={"console": True})


__all__ = ["OOM_MESSAGES", "OutOfMemoryAtOneRow", "free_memory", "is_out_of_memory", "with_backoff"]
