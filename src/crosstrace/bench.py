"""Benchmark: the fast engine against the plain reference algorithm, in one process, same inputs.

    python -m crosstrace.bench                 # JSON line: seconds per kind, speedup, max |ΔIE|
    python -m crosstrace.bench --scaling       # also time prompt lengths 8..128 → docs/scaling.{md,png}
    python -m crosstrace.bench --answer attribute_full   # P[o] of the whole attribute (default top1)
    python -m crosstrace.bench --paper-scale   # SpiritLM-7B's shape on CUDA (--tiny: on CPU); see bench_paper
    python -m crosstrace.bench --estimate      # Qwen2-Audio-7B vs SpiritLM-7B by MAC counts (no GPU)

The reference is ROME's algorithm exactly (2 + T·L full forward passes of batch samples + 1 per
kind, the clean prompt in row 0 as the source of restored states). Both engines get identical noise.
Next to each measured speedup the JSON gives ``matmul_ratio``: how many fewer multiply-accumulates
the fast engine's algorithm needs (weights only, counted by :func:`matmul_macs`), the part of the
speedup that no implementation detail can add to.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .answers import ANSWER_MODES, answer_tokens
from .data import BUNDLED_KNOWN, load_known
from .models.adapter import get_adapter, site_name, window_layers
from .models.loading import OFFLINE_DEFAULT, load_model
from .trace.api import Tracer, TraceSettings
from .trace.cost import Macs, matmul_macs
from .trace.fast import trace_fast
from .trace.noise import NoiseConfig
from .trace.reference import rome_inputs, trace_reference, trace_with_patch
from .trace.state import Corruption
from .trace.tokens import attribute_token_ids, encode_prompt, encode_text
from .vocabulary import KINDS

SMOLLM2_SUBJECT_STD = 0.11666  # over all 1209 Known subjects (docs/method.md); avoids a pass over the data


def _time(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def compare(model, adapter, ids: torch.Tensor, corruption: Corruption, kinds, window: int, max_rows: int,
            answer_ids=None) -> dict:
    """Seconds for both engines per kind, the largest IE difference and the MAC ratio.
    ``answer_ids``: o's tokens (None: top-1)."""
    m = Macs.of(model.config)
    L, T, S = adapter.num_layers, len(ids), corruption.noise.shape[0]
    row = {}
    for kind in kinds:
        ref, t_ref = _time(lambda kind=kind: trace_reference(model, adapter, ids, corruption, (kind,), window, answer_ids))
        fast, t_fast = _time(
            lambda kind=kind: trace_fast(model, adapter, ids, corruption, (kind,), window, max_rows, answer_ids)
        )
        macs = matmul_macs(kind, T, corruption.span[0], L, S, window, m, len(answer_ids or [0]))
        row[kind] = {
            "reference_s": t_ref,
            "fast_s": t_fast,
            "max_abs_diff_ie": float(np.abs(ref[kind].ie - fast[kind].ie).max()),
            "reference_macs": macs[0],
            "fast_macs": macs[1],
        }
    return row


def _setup(samples: int, window: int, kinds, threads: int, answer: str = "top1"):
    torch.set_num_threads(threads)
    lm = load_model(OFFLINE_DEFAULT)
    settings = TraceSettings(kinds=tuple(kinds), window=window, noise=NoiseConfig(samples=samples), answer=answer)
    return lm, get_adapter(lm.model), Tracer(lm.model, lm.tokenizer, settings, SMOLLM2_SUBJECT_STD)


def _warm_up(model, adapter, ids, corruption, window: int, max_rows: int) -> None:
    """One fast trace and one reference pass, so neither engine pays first-call costs in the timings."""
    trace_fast(model, adapter, ids, corruption, ("mlp",), window, max_rows)
    with torch.no_grad():
        trace_with_patch(model, adapter, rome_inputs(adapter, ids, corruption), [0], [])


def _summary(totals: dict) -> dict:
    for v in totals.values():
        v["speedup"] = v["reference_s"] / v["fast_s"]
        v["matmul_ratio"] = v.pop("reference_macs") / v.pop("fast_macs")
    ref_all = sum(v["reference_s"] for v in totals.values())
    fast_all = sum(v["fast_s"] for v in totals.values())
    return {
        "kinds": totals,
        "speedup_all_kinds": ref_all / fast_all,
        "max_abs_diff_ie": max(v["max_abs_diff_ie"] for v in totals.values()),
    }


def run(first: int, n_prompts: int, samples: int, window: int, kinds, threads: int, max_rows: int,
        answer: str = "top1") -> dict:
    """Known records first..first+n-1 (record 0 warms up), every kind, both engines."""
    lm, adapter, tracer = _setup(samples, window, kinds, threads, answer)
    records, _ = load_known(BUNDLED_KNOWN)
    _warm_up(lm.model, adapter, *_inputs(tracer, records[0])[:2], window, max_rows)
    keys = ("reference_s", "fast_s", "reference_macs", "fast_macs")
    totals = {k: dict.fromkeys(keys, 0) | {"max_abs_diff_ie": 0.0} for k in kinds}
    prompts = []
    for r in records[first : first + n_prompts]:
        ids, corruption, answer_ids = _inputs(tracer, r)
        prompts.append({"known_id": r.known_id, "tokens": len(ids), "subject": list(corruption.span),
                        "answer_tokens": len(answer_ids or [0])})
        for kind, v in compare(lm.model, adapter, ids, corruption, kinds, window, max_rows, answer_ids).items():
            for key in keys:
                totals[kind][key] += v[key]
            totals[kind]["max_abs_diff_ie"] = max(totals[kind]["max_abs_diff_ie"], v["max_abs_diff_ie"])
    head = {"model": OFFLINE_DEFAULT, "device": "cpu", "threads": threads, "answer": answer, "prompts": prompts}
    return head | {"layers": adapter.num_layers, "samples": samples, "window": window} | _summary(totals)


def _inputs(tracer: Tracer, record):
    """Prompt ids, the seeded corruption and o's tokens for ``tracer.settings.answer`` (None: top-1)."""
    enc = encode_prompt(tracer.tokenizer, record.prompt, record.subject)
    answer_ids = None
    if tracer.settings.answer != "top1":
        attribute = attribute_token_ids(lambda text: encode_text(tracer.tokenizer, text), record.prompt, record.attribute)
        answer_ids = answer_tokens(tracer.settings.answer, attribute)
    return torch.tensor(enc.input_ids), tracer.corruption(record.known_id, enc.subject_span), answer_ids


def reference_seconds(model, adapter, ids, corruption: Corruption, kind: str, window: int, passes: int) -> float:
    """Reference time of one kind extrapolated from ``passes`` timed restored runs.

    Every run of the plain algorithm is the same full forward pass of S + 1 rows (only which hook
    copies which row differs), so (2 + T·L) × the mean time of a few runs is its total.
    """
    L, T = adapter.num_layers, len(ids)
    x = rome_inputs(adapter, ids, corruption)
    with torch.no_grad():
        layers = np.linspace(0, L - 1, passes).round().astype(int)
        toks = np.linspace(corruption.span[0], T - 1, passes).round().astype(int)
        sites = [
            [(site_name(kind, k), int(t)) for k in window_layers(int(layer), L, kind, window)]
            for layer, t in zip(layers, toks, strict=True)
        ]
        t0 = time.perf_counter()
        for states in sites:
            trace_with_patch(model, adapter, x, [0], states)
        per_pass = (time.perf_counter() - t0) / passes
    return (2 + T * L) * per_pass


def scaling(lengths, samples: int, window: int, threads: int, max_rows: int, kind: str = "mlp",
            full_reference_max: int = 16, passes: int = 8) -> list[dict]:
    """Time one kind on synthetic prompts of growing length (subject = tokens 1..3, as in most Known
    prompts). The reference runs in full up to ``full_reference_max`` tokens, beyond that it is
    extrapolated from ``passes`` timed runs (:func:`reference_seconds`); the fast engine always runs."""
    lm, adapter, tracer = _setup(samples, window, (kind,), threads)
    m = Macs.of(lm.model.config)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for T in lengths:
        ids = torch.randint(100, 40000, (T,), generator=gen)
        corruption = tracer.corruption(T, (1, 4))
        if T == lengths[0]:  # on a short prompt: warming up must not cost a long trace
            _warm_up(lm.model, adapter, ids[:8], tracer.corruption(8, (1, 4)), window, max_rows)
        if T <= full_reference_max:
            r = compare(lm.model, adapter, ids, corruption, (kind,), window, max_rows)[kind]
            r["reference"] = "measured"
        else:
            t0 = time.perf_counter()
            trace_fast(lm.model, adapter, ids, corruption, (kind,), window, max_rows)
            fast_s = time.perf_counter() - t0
            ref_s = reference_seconds(lm.model, adapter, ids, corruption, kind, window, passes)
            macs = matmul_macs(kind, T, 1, adapter.num_layers, samples, window, m)
            r = {"reference_s": ref_s, "fast_s": fast_s, "max_abs_diff_ie": None, "reference_macs": macs[0],
                 "fast_macs": macs[1], "reference": f"extrapolated from {passes} runs"}
        r["matmul_ratio"] = r.pop("reference_macs") / r.pop("fast_macs")
        rows.append({"tokens": T, "kind": kind, "samples": samples, "window": window, **r,
                     "speedup": r["reference_s"] / r["fast_s"]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def write_scaling(rows: list[dict], threads: int, path: Path) -> None:
    """The scaling table as Markdown next to a log-log plot of seconds against T."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4), constrained_layout=True)
    T = [r["tokens"] for r in rows]
    ax.loglog(T, [r["reference_s"] for r in rows], "o-", label="plain reference (ROME)")
    ax.loglog(T, [r["fast_s"] for r in rows], "s-", label="fast exact engine")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("prompt length T (tokens)")
    ax.set_ylabel(f"seconds per prompt ({rows[0]['kind']} kind)")
    ax.set_title(f"{OFFLINE_DEFAULT}, CPU × {threads} threads, {rows[0]['samples']} draws", fontsize=9)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".png"), dpi=150)
    fig.savefig(path.with_suffix(".pdf"))
    r0 = rows[0]
    lines = [
        f"# Scaling with prompt length ({r0['kind']} kind, window {r0['window']}, {r0['samples']} noise draws)",
        "",
        "Written by `python -m crosstrace.bench --scaling`; synthetic token ids, subject = tokens 1..3.",
        "",
        "| T | reference s | fast s | speedup | MAC ratio | max abs ΔIE | reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        diff = "—" if r["max_abs_diff_ie"] is None else f"{r['max_abs_diff_ie']:.1e}"
        lines.append(
            f"| {r['tokens']} | {r['reference_s']:.1f} | {r['fast_s']:.1f} | {r['speedup']:.1f}× "
            f"| {r['matmul_ratio']:.1f}× | {diff} | {r['reference']} |"
        )
    lines += ["", f"![scaling]({path.with_suffix('.png').name})", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m crosstrace.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--first", type=int, default=1, help="first Known record to time (record 0 warms up)")
    ap.add_argument("--prompts", type=int, default=2, help="Known prompts to time")
    ap.add_argument("--samples", type=int, default=10, help="noise draws per prompt")
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-rows", type=int, default=512)
    ap.add_argument("--answer", default="top1", choices=ANSWER_MODES,
                    help="what P[o] reads (trace.answer); attribute modes use each record's attribute")
    ap.add_argument("--scaling", action="store_true", help="time synthetic lengths instead and write --out")
    ap.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    ap.add_argument("--scaling-samples", type=int, default=10, help="noise draws for the scaling table")
    ap.add_argument("--out", type=Path, default=Path("docs/scaling.md"))
    g = ap.add_argument_group("paper scale (crosstrace.bench_paper)")
    g.add_argument("--paper-scale", action="store_true", help="random Llama-2-7B shape on CUDA, bf16 + fp32")
    g.add_argument("--tiny", action="store_true", help="with --paper-scale: tiny dimensions, runs on CPU (tests)")
    g.add_argument("--doc", type=Path, default=None, help="write the table between the paper-scale markers here")
    g.add_argument("--budget-s", type=float, default=420.0, help="stop measuring after this many seconds")
    g.add_argument("--passes", type=int, default=8, help="timed reference passes per extrapolated kind")
    g.add_argument("--paper-prompts", type=int, default=754, help="prompts per run for the projected wall time")
    g.add_argument("--t2t-quantiles", type=float, nargs="+", default=[0.1, 0.5, 0.9])
    g.add_argument("--s2t-quantiles", type=float, nargs="+", default=[0.5, 0.9])
    g.add_argument("--tokenizer", default=None,
                   help="a local Llama-2 tokenizer folder: recount T→T lengths instead of the committed table")
    g.add_argument("--estimate", action="store_true",
                   help="Qwen2-Audio-7B beside SpiritLM-7B: weight memory and PFLOP / hours by MAC counts (no GPU)")
    a = ap.parse_args(argv)
    if a.estimate:
        from . import bench_paper

        print(json.dumps(bench_paper.qwen2_audio_estimate(a.paper_prompts), indent=1), flush=True)
        return
    if a.paper_scale:
        from . import bench_paper

        tok = None
        if a.tokenizer:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(a.tokenizer)
        res = bench_paper.measure(a.tiny, {"t2t": a.t2t_quantiles, "s2t": a.s2t_quantiles}, a.samples, a.window,
                                  a.passes, a.budget_s, a.paper_prompts, tok, tuple(a.kinds))
        print(json.dumps(res), flush=True)
        if a.doc:
            args = list(argv if argv is not None else sys.argv[1:])
            if "--doc" in args:  # where the table went is not part of what was measured
                del args[args.index("--doc") : args.index("--doc") + 2]
            cmd = "python -m crosstrace.bench " + " ".join(args)
            bench_paper.write_doc(a.doc, bench_paper.markdown(res, cmd))
        return
    if a.scaling:
        rows = scaling(a.lengths, a.scaling_samples, a.window, a.threads, a.max_rows)
        write_scaling(rows, a.threads, a.out)
        return
    print(json.dumps(run(a.first, a.prompts, a.samples, a.window, a.kinds, a.threads, a.max_rows, a.answer)), flush=True)


if __name__ == "__main__":
    main()
