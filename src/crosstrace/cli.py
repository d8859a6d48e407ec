"""Command line: trace one prompt and look at it.

    crosstrace trace --prompt "Vinson Massif is located in the continent of" --subject "Vinson Massif"
    crosstrace trace ... --attribute "Antarctica" --answer attribute_full   # P of the whole attribute

prints the answer, P_clean, P_corrupted and the peak IE per kind, and writes one heatmap per kind plus the
IE table (``ie.parquet`` or ``ie.csv``) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import __version__


def _trace(a: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # the command line only writes files; never open a window
    # A hub id that cannot be fetched should end in our one-line error, not pages of retry warnings.
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    for flag, value in (("--prompt", a.prompt), ("--subject", a.subject)):
        if not value.strip():
            return _error(f"{flag} is empty" if not value else f"{flag} is only whitespace ({value!r})")
    if a.subject not in a.prompt:
        return _error(f"subject {a.subject!r} does not occur in prompt {a.prompt!r}")
    if a.answer != "top1" and not (a.attribute or "").strip():
        return _error(f"--answer {a.answer} reads the attribute's tokens; give it with --attribute")
    import torch

    from .answers import answer_label
    from .filtering import answer_matches
    from .models.loading import ModelLoadError, load_model
    from .report.figures import prompt_trace_figure, save
    from .trace import NoiseConfig, TraceSettings, trace_prompt
    from .trace.api import PromptTooLongError
    from .trace.backoff import OutOfMemoryAtOneRow
    from .trace.tokens import SpanError

    torch.set_num_threads(a.threads)
    # The cost estimate before a long trace is a warning of crosstrace.trace.api.
    warn = logging.StreamHandler(sys.stderr)
    warn.setFormatter(logging.Formatter("warning: %(message)s"))
    logging.getLogger("crosstrace").addHandler(warn)
    logging.getLogger("crosstrace").setLevel(logging.WARNING)
    try:
        lm = load_model(a.model, a.device, a.dtype, cache_dir=a.cache_dir)
    except (ModelLoadError, OSError, ValueError) as e:  # missing folder, bad files, unknown hub id offline
        reason = " ".join(str(e).split())  # one line, however long the library's message
        return _error(f"cannot load --model {a.model!r}: {reason[:400]}")
    noise = NoiseConfig(samples=a.samples, kind=a.noise_kind, seed=a.seed,
                        multiple=None if a.noise_abs is not None else a.noise_multiple, absolute=a.noise_abs)
    settings = TraceSettings(kinds=tuple(a.kinds), window=a.window, noise=noise, engine=a.engine, answer=a.answer,
                             max_tokens=a.max_prompt_tokens)
    try:
        res = trace_prompt(lm.model, lm.tokenizer, a.prompt, a.subject, settings, noise_std=a.noise_std,
                           attribute=a.attribute)
    except PromptTooLongError as e:
        return _error(f"{e}; raise --max-prompt-tokens to trace it anyway")
    except OutOfMemoryAtOneRow as e:
        return _error(f"{e}; try --device cpu, a smaller --dtype or fewer --samples")
    except SpanError as e:
        return _error(str(e))
    a.out.mkdir(parents=True, exist_ok=True)
    approximate = a.engine == "atp"
    # the expect check only means something when o is the model's own greedy token (top1)
    answer_ok = answer_matches(res.answer, a.attribute) if a.attribute and res.answer_mode == "top1" else None
    written = []
    for kind, kt in res.kinds.items():
        paths = [a.out / f"trace_{kind}.{ext}" for ext in a.formats]
        title = f"APPROXIMATE (AtP): {a.prompt}" if approximate else a.prompt
        save(prompt_trace_figure(res.tokens, res.subject_span, {kind: kt.p_restored}, res.answer, res.p_clean,
                                 res.p_corrupted, window=a.window, title=title, attribute=a.attribute,
                                 answer_ok=answer_ok, answer_mode=res.answer_mode), paths)
        written += [str(p) for p in paths]
    table = a.out / f"ie.{a.table_format}"
    frame = res.to_frame()
    if a.table_format == "csv":
        frame.to_csv(table, index=False)
    else:
        frame.to_parquet(table, index=False)
    summary = {
        "engine": a.engine, "answer": res.answer, "answer_id": res.answer_id, "answer_mode": res.answer_mode,
        "answer_ids": list(res.answer_ids), "p_clean": res.p_clean, "p_corrupted": res.p_corrupted,
        "noise_scale": res.noise_scale, "subject_tokens": res.tokens[res.subject_span[0] : res.subject_span[1]],
        "subject_span": list(res.subject_span),
        "peak_ie": {k: float(kt.ie.max()) for k, kt in res.kinds.items()}, "figures": written, "table": str(table),
    }
    print(f"answer {res.answer!r} ({answer_label(res.answer_mode)}): P_clean = {res.p_clean:.4f}, P_corrupted = {res.p_corrupted:.4f} (ν = {res.noise_scale:.4f})")
    for k, kt in res.kinds.items():
        t, layer = divmod(int(kt.ie.argmax()), kt.ie.shape[1])
        print(f"  {k:6s} peak IE {kt.ie.max():+.4f} at token {t} {res.tokens[t]!r}, layer {layer}"
              + ("  (approximate: attribution patching)" if approximate else ""))
    if res.p_corrupted >= res.p_clean:
        # the workflow flags the same prompts (traced-prompts table, figure titles)
        print(f"warning: corruption does not lower P(o): P_corrupted = {res.p_corrupted:.4f} >= P_clean = "
              f"{res.p_clean:.4f}, so no restoration can show an effect; a larger noise scale (--noise-multiple, "
              f"now ν = {res.noise_scale:.4f}) or another subject span may", file=sys.stderr)
    print(f"wrote {len(written)} figure(s) and {table} ({len(frame)} rows: kind, token, layer, IE, P_restored)")
    print(json.dumps(summary))
    return 0


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _noise_std(value: str) -> float | str:
    if value == "dataset":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'dataset', got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from .answers import ANSWER_MODES
    from .models.loading import OFFLINE_DEFAULT
    from .trace.api import ENGINES

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
    t.add_argument("--noise-std", type=_noise_std, default=None,
                   help="std of subject embeddings: a number, or 'dataset' for the workflow's value (all Known "
                        "subjects, as the workflow computes it); default: over this subject's tokens only")
    t.add_argument("--noise-abs", type=float, default=None, help="absolute ν (overrides --noise-multiple)")
    t.add_argument("--engine", default="auto", choices=list(ENGINES),
                   help="auto: fast where the model supports it, else reference (both exact); atp: attribution "
                        "patching, an approximation from one backward pass (figures say APPROXIMATE)")
    t.add_argument("--max-prompt-tokens", type=_positive, default=256,
                   help="refuse longer prompts (tracing cost grows with the square of the length); "
                        "long ones get a time estimate first")
    t.add_argument("--answer", default="top1", choices=list(ANSWER_MODES),
                   help="the traced answer o: top1 = the clean greedy next token (ROME); attribute_first = the "
                        "attribute's first token; attribute_full = every attribute token, teacher-forced (joint P)")
    t.add_argument("--attribute", default=None, help="the expected answer, e.g. 'Antarctica' (needed by attribute_*)")
    t.add_argument("--device", default="cpu")
    t.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--cache-dir", default=None)
    t.add_argument("--out", type=Path, default=Path("trace_out"), help="folder for the figures and the IE table")
    t.add_argument("--formats", nargs="+", default=["png", "pdf"])
    t.add_argument("--table-format", default="parquet", choices=["parquet", "csv"],
                   help="format of the IE table ie.<format> (one row per kind, token and layer)")
    t.set_defaults(func=_trace)
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
