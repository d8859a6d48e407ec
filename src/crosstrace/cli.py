"""Command line: trace one prompt and look at it.

    crosstrace trace --prompt "Vinson Massif is located in the continent of" --subject "Vinson Massif"
    crosstrace trace ... --attribute "Antarctica" --answer attribute_full   # P of the whole attribute
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__


def _trace(a: argparse.Namespace) -> int:
    import torch

    from .answers import answer_label
    from .models.loading import load_model
    from .report.figures import prompt_figure, save
    from .trace import NoiseConfig, TraceSettings, trace_prompt
    from .trace.tokens import SpanError

    torch.set_num_threads(a.threads)
    if a.subject not in a.prompt:
        print(f"error: subject {a.subject!r} does not occur in prompt {a.prompt!r}", file=sys.stderr)
        return 2
    if a.answer != "top1" and not (a.attribute or "").strip():
        print(f"error: --answer {a.answer} reads the attribute's tokens; give it with --attribute", file=sys.stderr)
        return 2
    lm = load_model(a.model, a.device, a.dtype, cache_dir=a.cache_dir)
    noise = NoiseConfig(samples=a.samples, kind=a.noise_kind, seed=a.seed,
                        multiple=None if a.noise_abs is not None else a.noise_multiple, absolute=a.noise_abs)
    settings = TraceSettings(kinds=tuple(a.kinds), window=a.window, noise=noise, engine=a.engine, answer=a.answer)
    try:
        res = trace_prompt(lm.model, lm.tokenizer, a.prompt, a.subject, settings, noise_std=a.noise_std,
                           attribute=a.attribute)
    except SpanError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, kt in res.kinds.items():
        paths = [a.out / f"trace_{kind}.{ext}" for ext in a.formats]
        save(prompt_figure(res.tokens, res.subject_span, kt.p_restored, kt.p_corrupted, kind, res.answer, a.window,
                           res.answer_mode), paths)
        written += [str(p) for p in paths]
    summary = {
        "answer": res.answer, "answer_id": res.answer_id, "answer_mode": res.answer_mode,
        "answer_ids": list(res.answer_ids), "p_clean": res.p_clean, "p_corrupted": res.p_corrupted,
        "noise_scale": res.noise_scale, "subject_tokens": res.tokens[res.subject_span[0] : res.subject_span[1]],
        "subject_span": list(res.subject_span),
        "peak_ie": {k: float(kt.ie.max()) for k, kt in res.kinds.items()}, "figures": written,
    }
    print(f"answer {res.answer!r} ({answer_label(res.answer_mode)}): P_clean = {res.p_clean:.4f}, P_corrupted = {res.p_corrupted:.4f} (ν = {res.noise_scale:.4f})")
    for k, kt in res.kinds.items():
        t, layer = divmod(int(kt.ie.argmax()), kt.ie.shape[1])
        print(f"  {k:6s} peak IE {kt.ie.max():+.4f} at token {t} {res.tokens[t]!r}, layer {layer}")
    print(json.dumps(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .answers import ANSWER_MODES
    from .models.loading import OFFLINE_DEFAULT

    ap = argparse.ArgumentParser(prog="crosstrace", description="Causal tracing of factual recall (text and speech).")
    ap.add_argument("--version", action="version", version=f"crosstrace {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("trace", help="trace one prompt and save one heatmap per kind",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--model", default=OFFLINE_DEFAULT, help="offline alias, local HF folder or hub id")
    t.add_argument("--prompt", required=True)
    t.add_argument("--subject", required=True, help="must occur in the prompt (first occurrence is corrupted)")
    t.add_argument("--kinds", nargs="+", default=["hidden", "mlp", "attn"], choices=["hidden", "mlp", "attn"])
    t.add_argument("--window", type=int, default=10)
    t.add_argument("--samples", type=int, default=10, help="noise draws")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--noise-kind", default="gaussian", choices=["gaussian", "uniform"])
    t.add_argument("--noise-multiple", type=float, default=3.0, help="ν = multiple × std of subject embeddings")
    t.add_argument("--noise-std", type=float, default=None,
                   help="std of subject embeddings (default: over this subject's tokens; the workflow uses all dataset subjects)")
    t.add_argument("--noise-abs", type=float, default=None, help="absolute ν (overrides --noise-multiple)")
    t.add_argument("--engine", default="auto", choices=["auto", "fast", "reference"])
    t.add_argument("--answer", default="top1", choices=list(ANSWER_MODES),
                   help="the traced answer o: top1 = the clean greedy next token (ROME); attribute_first = the "
                        "attribute's first token; attribute_full = every attribute token, teacher-forced (joint P)")
    t.add_argument("--attribute", default=None, help="the expected answer, e.g. 'Antarctica' (needed by attribute_*)")
    t.add_argument("--device", default="cpu")
    t.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--cache-dir", default=None)
    t.add_argument("--out", type=Path, default=Path("trace_out"), help="folder for the figures")
    t.add_argument("--formats", nargs="+", default=["png", "pdf"])
    t.set_defaults(func=_trace)
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
