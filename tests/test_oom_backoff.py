"""Out-of-memory back-off (crosstrace.trace.backoff): the predicate, the halving, and fault injection into
every engine. A prompt that runs out of memory is traced again with half the rows per batch; the tables
equal a run without the fault; a prompt that does not fit at one row is quarantined and the shard goes on."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_llama

from crosstrace.models.adapter import get_adapter
from crosstrace.trace import NoiseConfig, Tracer, TraceSettings
from crosstrace.trace.atp import trace_atp
from crosstrace.trace.backoff import OutOfMemoryAtOneRow, free_memory, is_out_of_memory, with_backoff
from crosstrace.trace.fast import trace_fast
from crosstrace.trace.noise import draw_noise
from crosstrace.trace.reference import trace_reference
from crosstrace.trace.state import Corruption
from crosstrace.trace.tables import trace_records

KINDS = ("hidden", "mlp", "attn")
RECORDS = [(3, [5, 9, 12, 7, 30, 2], (1, 3)), (8, [11, 4, 4, 19, 22, 8, 1], (0, 2)), (21, [7, 7, 1, 60, 2, 9, 10], (2, 5))]


# --- the predicate and the halving ------------------------------------------------------------------------


@pytest.mark.parametrize("err", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    torch.cuda.OutOfMemoryError("CUDA out of memory."),  # the same class
    RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1.00 MB)"),
    RuntimeError("XPU out of memory. Tried to allocate 1.00 GiB"),
    RuntimeError("HIP out of memory. Tried to allocate 1.00 GiB"),
    RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                 "allocate 123 bytes"),
    MemoryError(),
], ids=["torch", "cuda", "mps", "xpu", "hip", "cuda-driver", "cublas", "cpu-allocator", "python"])
def test_out_of_memory_errors_of_every_backend_are_recognised(err):
    assert is_out_of_memory(err)


@pytest.mark.parametrize("err", [RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)"),
                                 RuntimeError("CUDA error: an illegal memory access was encountered"),
                                 ValueError("out of memory"), KeyError("x")])
def test_other_errors_are_not_out_of_memory(err):
    assert not is_out_of_memory(err)


def _fails_above(limit: int, calls: list[int]):
    def trace(rows: int) -> str:
        calls.append(rows)
        if rows > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory at {rows} rows")
        return f"traced at {rows}"

    return trace


def test_backoff_halves_until_the_batch_fits_and_logs_each_step_once(caplog):
    calls: list[int] = []
    with caplog.at_level(logging.WARNING, logger="crosstrace.trace.backoff"):
        assert with_backoff(_fails_above(3, calls), 16, 7, what="known_id 5") == "traced at 2"
    assert calls == [16, 8, 4, 2]
    lines = [r.getMessage() for r in caplog.records]
    assert [line.rsplit("with ", 1)[1] for line in lines] == ["8 rows per batch", "4 rows per batch", "2 rows per batch"]
    assert lines[0].startswith("known_id 5: out of memory (CUDA out of memory at 16 rows)")


def test_backoff_gives_up_below_one_row():
    calls: list[int] = []
    with pytest.raises(OutOfMemoryAtOneRow, match=r"^out of memory at 1 row: 7 tokens$"):
        with_backoff(_fails_above(0, calls), 5, 7)
    assert calls == [5, 2, 1]


def test_other_errors_pass_through_untouched():
    calls: list[int] = []

    def trace(rows):
        calls.append(rows)
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        with_backoff(trace, 16, 7)
    assert calls == [16]


def test_free_memory_empties_the_accelerator_cache(monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "empty_cache", lambda: emptied.append(True))
    free_memory()
    assert emptied == [True]


# --- fault injection into the engines ---------------------------------------------------------------------


class InjectedOOM:
    """Fault injection (a test stand-in for an accelerator running out of memory): the model's LM head,
    where every batch of every engine ends, raises ``torch.OutOfMemoryError`` on the first ``first``
    batches with more than ``above`` rows while ``active``."""

    def __init__(self, model, above: int, first: float = math.inf):
        self.model, self.above, self.first = model, above, first
        self.raised, self.active = 0, True

    def _hook(self, module, args):
        rows = args[0].shape[0]
        if self.active and rows > self.above and self.raised < self.first:
            self.raised += 1
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected at {rows} rows)")

    def __enter__(self):
        self.handle = self.model.lm_head.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


class _Tok:
    def decode(self, ids):
        return " ".join(f"t{i}" for i in ids)


@pytest.fixture
def one_thread():
    """Bit-identity across batch sizes is a property of the matrix kernels: with one thread MKL sums each
    row in the same order for 4 rows or more (several threads split small products by row count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _table(engine: str, samples: int, fault: InjectedOOM | None = None, model=None, only: int | None = None):
    model = model or tiny_llama(layers=4)
    tracer = Tracer(model, _Tok(), TraceSettings(window=2, engine=engine, noise=NoiseConfig(samples=samples)), 0.05)

    def trace_one(r):
        if fault is not None and only is not None:
            fault.active = r["known_id"] == only
        return tracer.trace_ids(r["known_id"], r["ids"], r["span"])

    recs = [{"known_id": k, "ids": ids, "span": span} for k, ids, span in RECORDS]
    return trace_records(tracer, recs, "tiny", "t2t", trace_one=trace_one, progress=False)


# (engine, noise draws, inject above this many rows, for the first n batches, rows per batch at the end)
# fast: 4 layers × 4 draws = 16 rows → 8 → 4 (one restoration per batch); reference: 4 draws (+ the clean
# row) → 2; atp: 8 draws → 4. Each ends at ≥ 4 rows per matrix product.
FAULTS = [("fast", 4, 4, 2, 4), ("reference", 4, 3, 1, 2), ("atp", 8, 5, 1, 4)]


@pytest.mark.parametrize("engine,samples,above,first,final_rows", FAULTS, ids=[f[0] for f in FAULTS])
def test_backoff_tables_are_byte_identical_to_a_run_without_the_fault(one_thread, caplog, engine, samples, above, first,
                                                                     final_rows):
    want, _ = _table(engine, samples)
    model = tiny_llama(layers=4)
    with InjectedOOM(model, above, first) as fault, caplog.at_level(logging.WARNING, logger="crosstrace.trace.backoff"):
        got, quarantined = _table(engine, samples, fault, model)
    assert fault.raised == first
    assert quarantined.empty
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    backoffs = [r.getMessage() for r in caplog.records]
    assert len(backoffs) == first, backoffs  # each back-off logged once, with the new size
    assert backoffs[-1].startswith("known_id 3: out of memory (CUDA out of memory (injected")
    assert backoffs[-1].endswith(f"tracing it again with {final_rows} rows per batch")


@pytest.mark.parametrize("engine", ["fast", "reference", "atp"])
def test_a_prompt_that_does_not_fit_at_one_row_is_quarantined_and_the_shard_goes_on(engine):
    want, _ = _table(engine, 4)
    model = tiny_llama(layers=4)
    with InjectedOOM(model, above=0) as fault:
        got, quarantined = _table(engine, 4, fault, model, only=8)
    assert quarantined.to_dict("records") == [{"model": "tiny", "modality": "t2t", "known_id": 8, "stage": "trace",
                                               "reason": "out of memory at 1 row: 7 tokens"}]
    pd.testing.assert_frame_equal(got, want[want["known_id"] != 8].reset_index(drop=True), check_exact=True)


def _case(model, samples: int):
    torch.manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (8,))
    return ids, Corruption((1, 4), 0.5 * draw_noise(1, 7, samples, 3, model.config.hidden_size))


ENGINES = {
    "fast": lambda m, ad, ids, c, rows: trace_fast(m, ad, ids, c, KINDS, 2, rows),
    "reference": lambda m, ad, ids, c, rows: trace_reference(m, ad, ids, c, KINDS, 2, max_rows=rows),
    "atp": lambda m, ad, ids, c, rows: trace_atp(m, ad, ids, c, KINDS, 2, max_rows=rows),
}


@pytest.mark.parametrize("rows", [1, 2, 3, 5])
@pytest.mark.parametrize("engine", list(ENGINES))
def test_every_engine_gives_the_same_numbers_below_one_restorations_draws(engine, rows):
    """Splitting the noise draws (fewer rows than draws per batch) changes only the grouping: equal up to
    float summation order (MKL takes another kernel for 1-3 rows), whatever the thread count."""
    model = tiny_llama(layers=4)
    ad = get_adapter(model)
    ids, corruption = _case(model, 6)
    base = ENGINES[engine](model, ad, ids, corruption, None if engine != "fast" else 10_000)
    other = ENGINES[engine](model, ad, ids, corruption, rows)
    for kind in KINDS:
        assert other[kind].p_corrupted == pytest.approx(base[kind].p_corrupted, abs=1e-6)
        np.testing.assert_allclose(other[kind].p_restored, base[kind].p_restored, atol=1e-6, rtol=0)
    assert abs(base["hidden"].p_clean - base["hidden"].p_corrupted) > 1e-3  # the case moves P[o]


def test_the_cost_estimate_of_a_long_prompt_skips_itself_when_out_of_memory(caplog):
    """Prompts of 48 tokens or more get a timed forward pass of samples + 1 rows first: out of memory there
    costs the estimate, not the prompt (the trace then backs off on its own)."""
    model = tiny_llama(layers=4)
    ids, span = [int(i) for i in torch.randint(0, 64, (50,), generator=torch.Generator().manual_seed(0))], (3, 6)
    tracer = Tracer(model, _Tok(), TraceSettings(window=2, noise=NoiseConfig(samples=4)), 0.05)
    want = tracer.trace_ids(1, ids, span)
    with InjectedOOM(model, above=4, first=1) as fault, caplog.at_level(logging.WARNING):
        assert tracer.estimate_seconds(ids, span) is None
        assert fault.raised == 1
        fault.raised = 0
        got = tracer.trace_ids(1, ids, span)
    assert fault.raised == 1 and "known_id 1: out of memory" not in caplog.text  # the estimate took the fault
    for kind in KINDS:
        np.testing.assert_array_equal(got.kinds[kind].p_restored, want.kinds[kind].p_restored)
