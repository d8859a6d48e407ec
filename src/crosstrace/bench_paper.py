"""The paper's run at full scale: SpiritLM-7B's shape on a GPU, both engines, projected wall time.

    python -m crosstrace.bench --paper-scale [--doc docs/performance.md]   # CUDA, one device call
    python -m crosstrace.bench --paper-scale --tiny                         # same code on CPU, tiny dims

A randomly initialised ``LlamaForCausalLM`` with the Llama-2-7B configuration and SpiritLM's vocabulary
(32512) costs what SpiritLM-7B costs, and nothing is downloaded. Its LM head is scaled ×3 so that the
clean answer has a non-trivial probability (random weights give a near-uniform output, where every IE
would be ~0 and a bf16 vs fp32 comparison meaningless). Noise ν = 3 × the std of its embedding matrix.

Prompt lengths come from resources/paper_scale/lengths.csv (how they were made is in make_lengths.py
there): T→T = the Known prompts under the Llama-2 tokenizer (+2 for SpiritLM's ``▁`` and ``[Text]``),
S→T = 25 units per second of piper audio + 4 special tokens (an upper bound: SpiritLM deduplicates
repeated units). For each modality the benchmark times prompts at a few length quantiles (random token
ids: cost does not depend on content):

- fast engine, bf16, each kind, rows per batch from free GPU memory (``max_rows`` None);
- reference engine, bf16: in full on the shortest timed T→T prompt (and max |ΔIE| against fast there),
  elsewhere extrapolated from ``passes`` timed restored runs per kind (every run is the same full pass);
- fast engine, fp32, on the median T→T prompt: max |ΔIE| bf16 vs fp32.

Seconds per weight MAC (``crosstrace.trace.cost.matmul_macs``) measured at those lengths, interpolated in log
T, price every prompt of the length distribution; × ``prompts`` per run gives the projected wall time of
SpiritLM T→T, SpiritLM S→T and Llama-2 T→T. Measurements stop when ``budget_s`` is spent (what was
skipped is listed) so the run fits one device call.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import torch

from .vocabulary import KINDS

ROOT = Path(__file__).resolve().parents[2]
LENGTHS = ROOT / "resources" / "paper_scale" / "lengths.csv"
KNOWN = ROOT / "resources" / "known_1000.json"
# Llama-2-7B's configuration with SpiritLM's vocabulary (32000 text + 500 units + specials).
SPIRITLM_7B = dict(vocab_size=32512, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                   num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
                   rope_theta=10000.0, tie_word_embeddings=False)
TINY = dict(SPIRITLM_7B, vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4)
HEAD_SCALE = 3.0
UNITS_PER_S = 25
T2T_EXTRA, S2T_EXTRA = 2, 4  # SpiritLM: BOS ▁ [Text] … ; BOS ▁ [Speech] units … [Text]
PAPER_PROMPTS = 754  # prompts per run in the paper's Figure 2
RUNS = {"spiritlm_t2t": "t2t", "spiritlm_s2t": "s2t", "llama2_t2t": "llama2"}
BEGIN, END = "<!-- paper-scale:begin -->", "<!-- paper-scale:end -->"


def prompt_lengths(table: Path = LENGTHS, known: Path = KNOWN, tokenizer=None):
    """Per record and modality: (T, subject start, subject end). ``tokenizer``: a Llama-2 tokenizer
    (anything with ``encode``) replaces the committed T→T counts."""
    import pandas as pd

    from .trace.tokens import encode_prompt

    t = pd.read_csv(table)
    recs = {r["known_id"]: r for r in json.loads(known.read_text())}
    if tokenizer is not None:
        enc = [encode_prompt(tokenizer, recs[k]["prompt"], recs[k]["subject"]) for k in t["known_id"]]
        t["llama2_tokens"] = [len(e.input_ids) for e in enc]
        t["subject_start"] = [e.subject_span[0] for e in enc]
        t["subject_end"] = [e.subject_span[1] for e in enc]
    out = {
        "llama2": t[["llama2_tokens", "subject_start", "subject_end"]].to_numpy(),
        "t2t": t[["llama2_tokens", "subject_start", "subject_end"]].to_numpy() + T2T_EXTRA,
    }
    s = t.dropna(subset=["piper_s"])
    rows = []
    for kid, sec in zip(s["known_id"], s["piper_s"], strict=True):
        r = recs[kid]
        units = round(UNITS_PER_S * sec)
        c0 = r["prompt"].find(r["subject"])
        frac0, frac1 = c0 / len(r["prompt"]), (c0 + len(r["subject"])) / len(r["prompt"])
        # subject units by character position (the aligner's exact span is not needed for cost)
        b = 3 + min(units - 1, int(units * frac0))
        rows.append((units + S2T_EXTRA, b, max(b + 1, 3 + math.ceil(units * frac1))))
    out["s2t"] = np.array(rows, dtype=int)
    return out


def build_models(tiny: bool, device: torch.device):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        fp32 = LlamaForCausalLM(LlamaConfig(**(TINY if tiny else SPIRITLM_7B))).eval()
        with torch.no_grad():
            fp32.lm_head.weight.mul_(HEAD_SCALE)
    fp32.requires_grad_(False)
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    return fp32, bf16


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _pick(lengths: np.ndarray, q: float) -> tuple[int, int, int]:
    """The prompt whose length is the q-quantile of the distribution (nearest rank)."""
    order = np.argsort(lengths[:, 0], kind="stable")
    return tuple(int(v) for v in lengths[order[min(len(order) - 1, int(round(q * (len(order) - 1))))]])


def _case(model, T: int, span: tuple[int, int], samples: int, nu: float, seed: int):
    from .trace.noise import draw_noise
    from .trace.state import Corruption

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (T,), generator=g)
    noise = nu * draw_noise(seed, T, samples, span[1] - span[0], model.config.hidden_size)
    return ids.to(model.device), Corruption(span, noise)


def _peak_reset(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device):
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def measure(tiny: bool = False, quantiles=None, samples: int = 10, window: int = 10, passes: int = 8,
            budget_s: float = 420.0, prompts: int = PAPER_PROMPTS, tokenizer=None, kinds=KINDS) -> dict:
    """Everything the paper-scale table needs, as one JSON-able dict."""
    from .models.adapter import get_adapter
    from .trace.cost import Macs, matmul_macs
    from .trace.fast import auto_max_rows, trace_fast
    from .trace.reference import rome_inputs, trace_reference, trace_with_patch

    t_start = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not tiny:
        raise SystemExit("--paper-scale needs a CUDA GPU (7B in bf16 and fp32); on CPU use --paper-scale --tiny")
    quantiles = quantiles or {"t2t": [0.1, 0.5, 0.9], "s2t": [0.5, 0.9]}
    lengths = prompt_lengths(tokenizer=tokenizer)
    fp32, bf16 = build_models(tiny, device)
    ad32, ad16 = get_adapter(fp32), get_adapter(bf16)
    L, S = ad16.num_layers, samples
    nu = 3 * float(fp32.model.embed_tokens.weight.float().std())
    macs = Macs.of(bf16.config)
    build_s = time.perf_counter() - t_start
    skipped, rows = [], []

    def left() -> float:
        return budget_s - (time.perf_counter() - t_start)

    def timed(fn):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        return out, time.perf_counter() - t0

    def ref_extrapolated(ids, corruption, kind):
        x = rome_inputs(ad16, ids, corruption)
        T = len(ids)
        layers = np.linspace(0, L - 1, passes).round().astype(int)
        toks = np.linspace(corruption.span[0], T - 1, passes).round().astype(int)
        from .models.adapter import site_name, window_layers

        with torch.no_grad():
            trace_with_patch(bf16, ad16, x, [0], [])  # warm-up at this shape
            _, sec = timed(lambda: [trace_with_patch(bf16, ad16, x, [0], [
                (site_name(kind, k), int(t)) for k in window_layers(int(layer), L, kind, window)])
                for layer, t in zip(layers, toks, strict=True)])
        return (2 + T * L) * sec / passes

    # warm up both engines on a short prompt (kernels, allocator)
    ids, corr = _case(bf16, 8, (1, 3), S, nu, 0)
    trace_fast(bf16, ad16, ids, corr, ("mlp",), window, None)
    with torch.no_grad():
        trace_with_patch(bf16, ad16, rome_inputs(ad16, ids, corr), [0], [])
    diffs = {}
    shortest_t2t = min(_pick(lengths["t2t"], q)[0] for q in quantiles["t2t"])
    for modality, qs in quantiles.items():
        for q in qs:
            T, b, e = _pick(lengths[modality], q)
            ids, corruption = _case(bf16, T, (b, e), S, nu, T)
            for kind in kinds:
                if left() < 0:
                    skipped.append(f"{modality} T={T} {kind}")
                    continue
                _peak_reset(device)
                fast, fast_s = timed(lambda kind=kind, ids=ids, c=corruption: trace_fast(bf16, ad16, ids, c, (kind,),
                                                                                         window, None))
                row = {"modality": modality, "quantile": q, "tokens": T, "subject": [b, e], "kind": kind,
                       "fast_s": fast_s, "peak_gib": _peak_gib(device), "max_rows": auto_max_rows(bf16, T, device)}
                row["reference_macs"], row["fast_macs"] = matmul_macs(kind, T, b, L, S, window, macs)
                if modality == "t2t" and T == shortest_t2t:
                    ref, ref_s = timed(lambda kind=kind, ids=ids, c=corruption: trace_reference(bf16, ad16, ids, c,
                                                                                                (kind,), window))
                    row.update(reference_s=ref_s, reference="measured in full",
                               max_abs_diff_ie_ref_vs_fast=float(np.abs(ref[kind].ie - fast[kind].ie).max()))
                else:
                    row.update(reference_s=ref_extrapolated(ids, corruption, kind),
                               reference=f"extrapolated from {passes} passes")
                row["p_clean"], row["p_corrupted"] = fast[kind].p_clean, fast[kind].p_corrupted
                row["max_abs_ie"] = float(np.abs(fast[kind].ie).max())
                rows.append(row)
                diffs[(modality, T, kind)] = fast[kind]
    # bf16 vs fp32 on the median T→T prompt
    T, b, e = _pick(lengths["t2t"], 0.5)
    ids, corruption = _case(bf16, T, (b, e), S, nu, T)
    precision = []
    for kind in kinds:
        if left() < 0:
            skipped.append(f"fp32 t2t T={T} {kind}")
            continue
        if ("t2t", T, kind) not in diffs:  # the median was not among the timed quantiles
            diffs[("t2t", T, kind)] = trace_fast(bf16, ad16, ids, corruption, (kind,), window, None)[kind]
        _peak_reset(device)
        f32, s32 = timed(lambda kind=kind: trace_fast(fp32, ad32, ids, corruption, (kind,), window, None))
        d = np.abs(f32[kind].ie - diffs[("t2t", T, kind)].ie)
        precision.append({"kind": kind, "tokens": T, "fp32_fast_s": s32, "fp32_peak_gib": _peak_gib(device),
                          "max_abs_diff_ie_bf16_vs_fp32": float(d.max()),
                          "max_abs_ie_fp32": float(np.abs(f32[kind].ie).max()),
                          "same_answer": f32[kind].answer_id == diffs[("t2t", T, kind)].answer_id})
    return {
        "model": "random Llama-2-7B shape, vocab 32512" if not tiny else "tiny random Llama (--tiny)",
        "config": TINY if tiny else SPIRITLM_7B, "device": _device_name(device), "dtype": "bfloat16",
        "samples": S, "window": window, "noise_scale": nu, "head_scale": HEAD_SCALE, "build_s": build_s,
        "rows": rows, "precision": precision, "skipped": skipped,
        "projection": project(rows, lengths, L, S, window, macs, prompts),
        "lengths": {m: _describe(v[:, 0]) for m, v in lengths.items()},
        "wall_s": time.perf_counter() - t_start, "load": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
    }


def _device_name(device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def _describe(x: np.ndarray) -> dict:
    return {"n": int(len(x)), "mean": float(np.mean(x)), "min": int(np.min(x)), "p10": float(np.quantile(x, 0.1)),
            "median": float(np.median(x)), "p90": float(np.quantile(x, 0.9)), "max": int(np.max(x))}


def _seconds_per_mac(rows: list[dict], modality: str, kind: str, engine: str):
    """(log T, s/MAC) points measured for a modality and kind; the T→T ones also price Llama-2."""
    pts = sorted((math.log(r["tokens"]), r[f"{engine}_s"] / r[f"{engine}_macs"]) for r in rows
                 if r["modality"] == modality and r["kind"] == kind)
    return pts


def project(rows: list[dict], lengths: dict, L: int, S: int, window: int, macs, prompts: int) -> dict:
    """Projected seconds per run and engine: Σ over the length distribution of MACs × s/MAC at that length
    (interpolated in log T between measured lengths, constant beyond), scaled to ``prompts`` prompts."""
    from .trace.cost import matmul_macs

    out = {}
    for run, modality in RUNS.items():
        src = "t2t" if modality == "llama2" else modality
        per_engine = {}
        for engine in ("fast", "reference"):
            total, missing = 0.0, []
            for kind in KINDS:
                pts = _seconds_per_mac(rows, src, kind, engine)
                if not pts:
                    missing.append(kind)
                    continue
                x, y = zip(*pts, strict=True)
                secs = [matmul_macs(kind, int(T), int(b), L, S, window, macs)[engine == "fast"]
                        * np.interp(math.log(T), x, y) for T, b, _ in lengths[modality]]
                total += float(np.mean(secs)) * prompts
            per_engine[engine] = {"seconds": total, "hours": total / 3600, "kinds_missing": missing}
        out[run] = per_engine
    for engine in ("fast", "reference"):
        out.setdefault("total", {})[engine] = {"hours": sum(out[r][engine]["hours"] for r in RUNS)}
    return out


# Qwen2-Audio-7B (the hub's config.json; transformers' Qwen2AudioConfig): a Qwen2 LM of Llama-2-7B's shape with
# q/k/v biases and a 156032-token vocabulary, and Whisper-large-v3's encoder (32 layers of width 1280).
QWEN2_AUDIO_7B = dict(SPIRITLM_7B, vocab_size=156032, max_position_embeddings=8192)
QWEN2_AUDIO_7B_ENCODER = dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                              num_mel_bins=128, max_source_positions=1500)
QWEN2_AUDIO_S2T_EXTRA = 2  # <|audio_bos|> positions… <|audio_eos|> (the base model's template)
#: sustained bf16 throughput of the estimate (TFLOP/s): an H200's dense peak, and a realistic fraction of it
TFLOPS = {"peak": 790.0, "realistic": 400.0}


def qwen2_audio_lengths(lengths: dict | None = None) -> dict:
    """Qwen2-Audio-7B's prompt lengths, derived from the paper-scale table (:func:`prompt_lengths`): S→T = one
    position per 25 Hz encoder frame of the piper audio (the same 25/s as the table's S→T, never deduplicated)
    + ``<|audio_bos|>`` and ``<|audio_eos|>``; T→T = the Llama-2 counts without BOS (Qwen2's tokenizer adds
    none; its larger vocabulary writes English in about as many tokens or fewer, so this is an upper bound)."""
    lengths = lengths or prompt_lengths()
    shift = np.array([S2T_EXTRA - QWEN2_AUDIO_S2T_EXTRA] * 3)
    return {"t2t": lengths["llama2"] - 1, "s2t": lengths["s2t"] - shift}


def weight_gib(family: str = "qwen2-audio") -> dict:
    """Parameters and bf16 weight memory of a model shape, counted on the meta device (nothing allocated)."""
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
    )

    with torch.device("meta"):
        if family == "qwen2-audio":
            text = dict(QWEN2_AUDIO_7B, model_type="qwen2")
            model = Qwen2AudioForConditionalGeneration(Qwen2AudioConfig(audio_config=QWEN2_AUDIO_7B_ENCODER,
                                                                        text_config=text))
            encoder = sum(p.numel() for p in model.model.audio_tower.parameters())
        else:
            model, encoder = LlamaForCausalLM(LlamaConfig(**SPIRITLM_7B)), 0
    n = sum(p.numel() for p in model.parameters())
    return {"params": n, "encoder_params": encoder, "bf16_gib": 2 * n / 2**30}


def mac_estimate(config: dict, lengths: np.ndarray, samples: int = 10, window: int = 10, prompts: int = PAPER_PROMPTS,
                 kinds=KINDS) -> dict:
    """The paper-scale bench's estimate without a GPU: weight MACs of every prompt length
    (:func:`crosstrace.trace.cost.matmul_macs`, all ``kinds``), as PFLOP per prompt (2 FLOP per MAC) and hours
    for ``prompts`` prompts at the :data:`TFLOPS` throughputs, for the fast and the reference engine."""
    from types import SimpleNamespace

    from .trace.cost import Macs, matmul_macs

    m, L = Macs.of(SimpleNamespace(**config)), config["num_hidden_layers"]
    totals = np.zeros(2)
    for T, b, _ in lengths:
        for kind in kinds:
            totals += matmul_macs(kind, int(T), int(b), L, samples, window, m)
    out = {"prompts": prompts, "mean_tokens": float(np.mean(lengths[:, 0]))}
    for i, engine in enumerate(("reference", "fast")):
        pflop = 2 * totals[i] / len(lengths) / 1e15
        out[engine] = {"pflop_per_prompt": pflop,
                       **{f"hours_{k}": pflop * 1e15 * prompts / (v * 1e12) / 3600 for k, v in TFLOPS.items()}}
    return out


def qwen2_audio_estimate(prompts: int = PAPER_PROMPTS) -> dict:
    """GPU memory and time of a Qwen2-Audio-7B run (T→T and S→T, all three kinds, 10 draws, window 10), by the
    MAC method beside SpiritLM-7B's: an estimate from shapes and prompt lengths, nothing measured on a GPU."""
    qwen = qwen2_audio_lengths()
    base = prompt_lengths()
    return {
        "qwen2_audio_t2t": mac_estimate(QWEN2_AUDIO_7B, qwen["t2t"], prompts=prompts),
        "qwen2_audio_s2t": mac_estimate(QWEN2_AUDIO_7B, qwen["s2t"], prompts=prompts),
        "spiritlm_t2t": mac_estimate(SPIRITLM_7B, base["t2t"], prompts=prompts),
        "spiritlm_s2t": mac_estimate(SPIRITLM_7B, base["s2t"], prompts=prompts),
        "weights": {"qwen2-audio-7b": weight_gib("qwen2-audio"), "spiritlm-7b": weight_gib("spiritlm")},
        "tflops": TFLOPS,
    }


def markdown(res: dict, command: str) -> str:
    """The table for docs/performance.md (between the paper-scale markers)."""
    lines = [BEGIN, "", f"Written by `{command}` on {res['device']} ({res['model']}; {res['dtype']}, "
             f"{res['samples']} noise draws, window {res['window']}, ν = {res['noise_scale']:.3g}; "
             f"wall {res['wall_s']:.0f} s, model build {res['build_s']:.0f} s).", "",
             "| modality | T (quantile) | kind | fast s | reference s | speedup | reference | peak GiB | max_rows |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        peak = "—" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
        lines.append(f"| {r['modality']} | {r['tokens']} (q{r['quantile']:.2f}) | {r['kind']} | {r['fast_s']:.2f} | "
                     f"{r['reference_s']:.2f} | {r['reference_s'] / r['fast_s']:.1f}× | {r['reference']} | {peak} | "
                     f"{r['max_rows']} |")
    lines += ["", "| kind | T | max abs ΔIE bf16 vs fp32 | max abs IE (fp32) | fp32 fast s | same answer |",
              "|---|---|---|---|---|---|"]
    for p in res["precision"]:
        lines.append(f"| {p['kind']} | {p['tokens']} | {p['max_abs_diff_ie_bf16_vs_fp32']:.2e} | "
                     f"{p['max_abs_ie_fp32']:.2e} | {p['fp32_fast_s']:.2f} | {p['same_answer']} |")
    ref_full = [r for r in res["rows"] if "max_abs_diff_ie_ref_vs_fast" in r]
    if ref_full:
        lines += ["", "Reference vs fast in bf16 where the reference ran in full: max abs ΔIE "
                  + ", ".join(f"{r['kind']} {r['max_abs_diff_ie_ref_vs_fast']:.1e}" for r in ref_full) + "."]
    pr = res["projection"]
    lines += ["", f"Projected wall time, {PAPER_PROMPTS} prompts per run (s/MAC measured above × MACs of every "
              "prompt length; reference numbers rest on extrapolated passes):", "",
              "| run | fast engine h | reference engine h |", "|---|---|---|"]
    for run in (*RUNS, "total"):
        lines.append(f"| {run} | {pr[run]['fast']['hours']:.2f} | {pr[run]['reference']['hours']:.2f} |")
    if res["skipped"]:
        lines += ["", "Skipped (time budget): " + ", ".join(res["skipped"]) + "."]
    lines += ["", END]
    return "\n".join(lines)


def write_doc(path: Path, section: str) -> None:
    """Replace the section between the markers (or append it)."""
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
