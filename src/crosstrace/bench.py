"""Benchmark: the fast engine against the plain reference algorithm, in one process, same inputs.

    python -m crosstrace.bench                 # JSON line: seconds per kind, speedup, max |ΔIE|
    python -m crosstrace.bench --scaling       # also time prompt lengths 8..128 → docs/performance.md

The reference is ROME's algorithm exactly (2 + T·L full forward passes of batch samples + 1 per
kind, the clean prompt in row 0 as the source of restored states). Both engines get identical noise.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from .data import BUNDLED_KNOWN, load_known
from .models.adapter import KINDS, get_adapter
from .models.loading import OFFLINE_DEFAULT, load_model
from .trace.api import Tracer, TraceSettings
from .trace.fast import trace_fast
from .trace.noise import NoiseConfig
from .trace.reference import trace_reference
from .trace.tokens import encode_prompt

SMOLLM2_SUBJECT_STD = 0.11666  # over all 1209 Known subjects (method.md); avoids a pass over the data


def _time(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def compare(model, adapter, ids: torch.Tensor, corruption, kinds, window: int, max_rows: int) -> dict:
    """Seconds for both engines per kind and the largest IE difference."""
    row = {}
    for kind in kinds:
        ref, t_ref = _time(lambda kind=kind: trace_reference(model, adapter, ids, corruption, (kind,), window))
        fast, t_fast = _time(lambda kind=kind: trace_fast(model, adapter, ids, corruption, (kind,), window, max_rows))
        row[kind] = {"reference_s": t_ref, "fast_s": t_fast,
                     "max_abs_diff_ie": float(np.abs(ref[kind].ie - fast[kind].ie).max())}
    return row


def run(n_prompts: int, samples: int, window: int, kinds, threads: int, max_rows: int) -> dict:
    torch.set_num_threads(threads)
    lm = load_model(OFFLINE_DEFAULT)
    adapter = get_adapter(lm.model)
    tracer = Tracer(lm.model, lm.tokenizer, TraceSettings(kinds=tuple(kinds), window=window, noise=NoiseConfig(samples=samples)),
                    SMOLLM2_SUBJECT_STD)
    records, _ = load_known(BUNDLED_KNOWN)
    totals = {k: {"reference_s": 0.0, "fast_s": 0.0, "max_abs_diff_ie": 0.0} for k in kinds}
    tokens = []
    compare(lm.model, adapter, *_inputs(tracer, records[0]), kinds, window, max_rows)  # warm-up, not timed
    for r in records[1 : 1 + n_prompts]:
        ids, corruption = _inputs(tracer, r)
        tokens.append(len(ids))
        for kind, v in compare(lm.model, adapter, ids, corruption, kinds, window, max_rows).items():
            totals[kind]["reference_s"] += v["reference_s"]
            totals[kind]["fast_s"] += v["fast_s"]
            totals[kind]["max_abs_diff_ie"] = max(totals[kind]["max_abs_diff_ie"], v["max_abs_diff_ie"])
    for v in totals.values():
        v["speedup"] = v["reference_s"] / v["fast_s"]
    ref_all = sum(v["reference_s"] for v in totals.values())
    fast_all = sum(v["fast_s"] for v in totals.values())
    return {"model": OFFLINE_DEFAULT, "device": "cpu", "threads": threads, "prompts": n_prompts, "tokens": tokens,
            "layers": adapter.num_layers, "samples": samples, "window": window, "kinds": totals,
            "speedup_all_kinds": ref_all / fast_all,
            "max_abs_diff_ie": max(v["max_abs_diff_ie"] for v in totals.values())}


def _inputs(tracer: Tracer, record):
    enc = encode_prompt(tracer.tokenizer, record.prompt, record.subject)
    return torch.tensor(enc.input_ids), tracer.corruption(record.known_id, enc.subject_span)


def scaling(lengths, samples: int, window: int, threads: int, max_rows: int, kind: str = "mlp") -> list[dict]:
    """Time one kind on synthetic prompts of growing length (subject = tokens 1..3)."""
    torch.set_num_threads(threads)
    lm = load_model(OFFLINE_DEFAULT)
    adapter = get_adapter(lm.model)
    tracer = Tracer(lm.model, lm.tokenizer, TraceSettings(kinds=(kind,), window=window, noise=NoiseConfig(samples=samples)),
                    SMOLLM2_SUBJECT_STD)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for T in lengths:
        ids = torch.randint(100, 40000, (T,), generator=gen)
        corruption = tracer.corruption(T, (1, 4))
        r = compare(lm.model, adapter, ids, corruption, (kind,), window, max_rows)[kind]
        rows.append({"tokens": T, **r, "speedup": r["reference_s"] / r["fast_s"]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def write_performance(rows: list[dict], headline: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4), constrained_layout=True)
    T = [r["tokens"] for r in rows]
    ax.loglog(T, [r["reference_s"] for r in rows], "o-", label="plain reference (ROME)")
    ax.loglog(T, [r["fast_s"] for r in rows], "s-", label="fast exact engine")
    ax.set_xlabel("prompt length T (tokens)")
    ax.set_ylabel("seconds per prompt (one kind)")
    ax.set_title(f"{headline['model']}, CPU × {headline['threads']} threads")
    ax.legend()
    fig.savefig(path.with_suffix(".png"), dpi=150)
    lines = [
        "# Performance of the tracing engines", "",
        "Measured by `python -m crosstrace.bench --scaling` (both engines in the same process, same noise).", "",
        "## Known prompts (all kinds)", "", "```json", json.dumps(headline, indent=2), "```", "",
        "## Scaling with prompt length (MLP kind, window "
        f"{rows[0].get('window', '')})", "",
        "| T | reference s | fast s | speedup | max abs ΔIE |", "|---|---|---|---|---|",
        *[f"| {r['tokens']} | {r['reference_s']:.2f} | {r['fast_s']:.2f} | {r['speedup']:.1f}× | {r['max_abs_diff_ie']:.1e} |" for r in rows],
        "", f"![scaling]({path.with_suffix('.png').name})", "",
    ]
    path.write_text("\n".join(lines))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m crosstrace.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=3, help="Known prompts to time (after one warm-up prompt)")
    ap.add_argument("--samples", type=int, default=10, help="noise draws per prompt")
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-rows", type=int, default=512)
    ap.add_argument("--scaling", action="store_true", help="also time lengths 8..128 and write docs/performance.md")
    ap.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    ap.add_argument("--out", type=Path, default=Path("docs/performance.md"))
    a = ap.parse_args(argv)
    headline = run(a.prompts, a.samples, a.window, a.kinds, a.threads, a.max_rows)
    print(json.dumps(headline), flush=True)
    if a.scaling:
        rows = scaling(a.lengths, a.samples, a.window, a.threads, a.max_rows)
        for r in rows:
            r["window"] = a.window
        a.out.parent.mkdir(parents=True, exist_ok=True)
        write_performance(rows, headline, a.out)


if __name__ == "__main__":
    main()
