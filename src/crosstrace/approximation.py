"""Attribution patching against exact causal tracing: agreement metrics, the screening rule, and the
commands behind docs/approximation.md.

    python -m crosstrace.approximation validate --exact DIR   # AtP variants vs exact shards of DIR
    python -m crosstrace.approximation time --exact DIR        # AtP on every Known prompt of DIR, timed

``DIR`` is a traced run, ``results/<model>/<modality>`` (known.parquet, noise.json, shards/*.parquet):
the exact traces are read, never recomputed, and AtP gets the same prompts and the same noise
(noise for (seed, known_id, draw) depends on nothing else).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from .grids import ie_grid
from .report.stats import CATEGORY_MEANS, aie_table
from .trace.tables import category_table, merge_shards
from .vocabulary import KINDS

KIND_ORDER = KINDS


# --- agreement of one approximate (T, L) grid with the exact one -----------------------------------


def top_k_overlap(exact: np.ndarray, approx: np.ndarray, k: int = 10) -> float:
    """|top-k cells of exact ∩ top-k of approx| / k (largest IE; ties broken by position)."""
    k = min(k, exact.size)
    a = set(np.argsort(-exact.ravel(), kind="stable")[:k])
    b = set(np.argsort(-approx.ravel(), kind="stable")[:k])
    return len(a & b) / k


def grid_agreement(exact: np.ndarray, approx: np.ndarray, start: int, k: int = 10) -> dict:
    """Spearman ρ and top-k overlap over the cells a restoration can change (tokens from ``start``,
    the first subject token: before it IE ≡ 0 in every engine, and those ties would inflate ρ)."""
    e, a = exact[start:], approx[start:]
    rho = spearmanr(e.ravel(), a.ravel()).statistic if np.ptp(e) > 0 and np.ptp(a) > 0 else float("nan")
    return {"spearman": float(rho), "top_overlap": top_k_overlap(e, a, k)}


def completeness_gap(hidden_ie: np.ndarray, p_clean: float, p_corrupted: float) -> float:
    """How far a first-order estimate is from linear, from AtP's own numbers.

    Restoring every token's hidden state at layer l restores the clean run, so the exact total is
    P_clean − P_corr at every layer; AtP's estimates of the single restorations sum to its own estimate
    of that total. Mean over layers of |Σ_t IE(t, l) − (P_clean − P_corr)| / |P_clean − P_corr|:
    0 where the model is linear along the restoration, large where it saturates.
    """
    total = p_clean - p_corrupted
    if abs(total) < 1e-12:
        return 0.0
    return float(np.mean(np.abs(hidden_ie.sum(0) - total)) / abs(total))


# --- the screening rule -------------------------------------------------------------------------------


RANK_BY = ("total_effect", "atp_peak")


@dataclass(frozen=True)
class ScreenRule:
    """Trace exactly the ``top_n`` prompts ranked by ``rank_by``, plus every prompt whose AtP completeness
    gap exceeds ``max_gap`` (AtP uncertain there). None disables a criterion.

    ``rank_by``: ``total_effect`` = P_clean − P_corrupted, which the AtP pass computes exactly (its clean
    and corrupted runs are the exact ones), or ``atp_peak`` = the largest AtP estimate of any cell. On the
    offline model the exact peak IE of a prompt follows the total effect (Spearman 0.77 over 20 prompts)
    far better than AtP's peak (0.23): docs/approximation.md.
    """

    top_n: int | None = 50
    max_gap: float | None = 1.0
    rank_by: str = "total_effect"

    def __post_init__(self):
        if self.top_n is not None and self.top_n < 0:
            raise ValueError(f"screen top_n must be >= 0, got {self.top_n}")
        if self.max_gap is not None and self.max_gap < 0:
            raise ValueError(f"screen max_gap must be >= 0, got {self.max_gap}")
        if self.rank_by not in RANK_BY:
            raise ValueError(f"screen rank_by must be one of {RANK_BY}, got {self.rank_by!r}")


SCREEN_COLUMNS = ["known_id", "total_effect", "atp_peak", "gap", "rank", "top", "uncertain", "selected", "reason"]


def prompt_scores(ie: pd.DataFrame) -> pd.DataFrame:
    """Per prompt of an IE table (IE_COLUMNS): the total effect P_clean − P_corrupted, the peak IE over
    kinds and cells, and the completeness gap of the hidden kind (NaN when hidden was not traced)."""
    rows = []
    for kid, g in ie.groupby("known_id", sort=False):
        h = g[g["kind"] == "hidden"]
        gap = float("nan")
        if len(h):
            gap = completeness_gap(ie_grid(h, fill=0.0), float(h["p_clean"].iloc[0]), float(h["p_corrupted"].iloc[0]))
        first = g.iloc[0]
        rows.append({"known_id": int(kid), "total_effect": float(first["p_clean"] - first["p_corrupted"]),
                     "atp_peak": float(g["ie"].max()), "gap": gap})
    return pd.DataFrame(rows, columns=["known_id", "total_effect", "atp_peak", "gap"])


def screen(scores: pd.DataFrame, rule: ScreenRule) -> pd.DataFrame:
    """Apply the rule to :func:`prompt_scores`; every prompt is kept with the reason it was (not) selected."""
    s = scores.sort_values([rule.rank_by, "known_id"], ascending=[False, True]).reset_index(drop=True)
    s["rank"] = np.arange(1, len(s) + 1)
    s["top"] = s["rank"] <= (rule.top_n if rule.top_n is not None else -1)
    s["uncertain"] = (s["gap"] > rule.max_gap) if rule.max_gap is not None else False
    s["selected"] = s["top"] | s["uncertain"]
    reasons = []
    for top, unc, gap, rank in zip(s["top"], s["uncertain"], s["gap"], s["rank"], strict=True):
        parts = ([f"{rule.rank_by} rank {rank} ≤ top_n {rule.top_n}"] if top else []) + (
            [f"AtP completeness gap {gap:.2f} > max_gap {rule.max_gap}"] if unc else [])
        reasons.append("; ".join(parts) or "AtP only: not in top_n, AtP not uncertain")
    s["reason"] = reasons
    return s[SCREEN_COLUMNS]


# --- validation against exact shards --------------------------------------------------------------


def _grids(ie: pd.DataFrame) -> dict[tuple[int, str], dict]:
    """(known_id, kind) → IE grid and the prompt's run values, from an IE table."""
    out = {}
    for (kid, kind), g in ie.groupby(["known_id", "kind"], sort=False):
        first = g.iloc[0]
        out[(int(kid), kind)] = {"ie": ie_grid(g, fill=0.0),
                                 "span": (int(first["subject_start"]), int(first["subject_end"])),
                                 "p_clean": float(first["p_clean"]), "p_corrupted": float(first["p_corrupted"]),
                                 "answer_id": int(first["answer_id"])}
    return out


def aie_maps(ie: pd.DataFrame, kind: str, category_mean: str = "rome") -> dict[str, np.ndarray]:
    """Category → AIE over layers for one kind of an IE table, averaged as the workflow does
    (:func:`crosstrace.report.stats.aie_table`; ``rome``: ROME's pooled positions). P_restored is taken as
    P_corrupted + IE, so an approximate table (AtP estimates IE only) and an unsigned one (|IE|) are averaged
    alike."""
    g = ie[ie["kind"] == kind]
    g = g.assign(model="", modality="", answer_mode="", p_restored=g["p_corrupted"] + g["ie"])
    aie = aie_table(category_table(g), n_boot=0, category_mean=category_mean)
    return {c: a.sort_values("layer")["aie"].to_numpy() for c, a in aie.groupby("category")}


def compare(exact: pd.DataFrame, approx: pd.DataFrame, k: int = 10,
            category_mean: str = "rome") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (prompt, kind): Spearman ρ, top-k overlap, completeness gap and run values; and per
    (kind, category): the largest |ΔAIE| over layers, relative to the exact map's peak, and the
    layers of both peaks (AIE averaged as ``category_mean`` says)."""
    ge, ga = _grids(exact), _grids(approx)
    rows = []
    for key, e in ge.items():
        if key not in ga:
            continue
        a = ga[key]
        h = ga.get((key[0], "hidden"))
        gap = completeness_gap(h["ie"], h["p_clean"], h["p_corrupted"]) if h else float("nan")
        rows.append({"known_id": key[0], "kind": key[1], **grid_agreement(e["ie"], a["ie"], e["span"][0], k),
                     "gap": gap, "p_clean": e["p_clean"], "p_corrupted": e["p_corrupted"],
                     "n_tokens": e["ie"].shape[0], "exact_peak": float(e["ie"].max()),
                     "approx_peak": float(a["ie"].max()), "same_answer": e["answer_id"] == a["answer_id"]})
    per_prompt = pd.DataFrame(rows)
    common = pd.DataFrame([key for key in ge if key in ga], columns=["known_id", "kind"])
    exact, approx = (t.merge(common, on=["known_id", "kind"]) for t in (exact, approx))
    cats = []
    for kind in KIND_ORDER:
        me, ma = aie_maps(exact, kind, category_mean), aie_maps(approx, kind, category_mean)
        peak = max((float(np.max(v)) for v in me.values()), default=float("nan"))
        for cat, v in me.items():
            d = np.abs(ma[cat] - v)
            cats.append({"kind": kind, "category": cat, "max_abs_diff": float(d.max()),
                         "rel_to_peak": float(d.max() / peak) if peak > 0 else float("nan"),
                         "exact_peak_layer": int(np.argmax(v)), "approx_peak_layer": int(np.argmax(ma[cat])),
                         "exact_max": float(v.max()), "approx_max": float(ma[cat].max())})
    return per_prompt, pd.DataFrame(cats)


def read_exact(run_dir: Path, max_prompts: int | None = None) -> pd.DataFrame:
    """The exact shards of a run, in shard order, through the workflow's checked merge
    (:func:`~crosstrace.trace.tables.merge_shards`: an unreadable or overlapping shard is an error)."""
    paths = sorted((p for p in (run_dir / "shards").glob("[0-9]*.parquet") if p.stem.isdigit()), key=lambda p: int(p.stem))
    if not paths:
        raise FileNotFoundError(f"no exact shards in {run_dir / 'shards'}")
    ie, _ = merge_shards(paths)
    if max_prompts is not None:
        ie = ie[ie["known_id"].isin(ie["known_id"].drop_duplicates().iloc[:max_prompts])]
    return ie


def _tracer(run_dir: Path, engine: str, kinds, atp=None, threads: int = 2):
    import torch

    from .models.loading import OFFLINE_DEFAULT, load_model
    from .trace import NoiseConfig, Tracer, TraceSettings
    from .trace.atp import AtpConfig

    torch.set_num_threads(threads)
    noise = json.loads((run_dir / "noise.json").read_text())
    lm = load_model(OFFLINE_DEFAULT)
    settings = TraceSettings(kinds=tuple(kinds), window=10, noise=NoiseConfig(samples=10, seed=0), engine=engine,
                             atp=atp or AtpConfig())
    return Tracer(lm.model, lm.tokenizer, settings, noise["std"])


def _known(run_dir: Path) -> pd.DataFrame:
    k = pd.read_parquet(run_dir / "known.parquet")
    return k[k["known"]]


def atp_table(tracer, records: pd.DataFrame, model: str = "smollm2-135m") -> pd.DataFrame:
    from .trace.tables import trace_records

    ie, _ = trace_records(tracer, records.to_dict("records"), model, "t2t", progress=False)
    return ie


def graddrop_table(tracer, records: pd.DataFrame, exact: pd.DataFrame) -> pd.DataFrame:
    """GradDrop magnitudes in the IE table's layout (``ie`` = the unsigned estimate)."""
    import torch

    from .trace.atp import graddrop
    from .trace.tokens import encode_prompt

    frames = []
    for r in records.to_dict("records"):
        enc = encode_prompt(tracer.tokenizer, r["prompt"], r["subject"])
        corruption = tracer.corruption(int(r["known_id"]), enc.subject_span)
        gd = graddrop(tracer.model, tracer.adapter, torch.tensor(enc.input_ids), corruption,
                      tracer.settings.kinds, tracer.settings.window)
        for kind, mat in gd.items():
            g = exact[(exact["known_id"] == r["known_id"]) & (exact["kind"] == kind)].copy()
            g["ie"] = mat[g["token_index"].to_numpy(), g["layer"].to_numpy()]
            frames.append(g)
    return pd.concat(frames, ignore_index=True)


VARIANTS = {
    "AtP": {},
    "AtP log-odds": {"linearize": "logodds"},
    "AtP IG-4": {"steps": 4},
    "AtP IG-4 log-odds": {"steps": 4, "linearize": "logodds"},
}


def screening_agreement(exact: pd.DataFrame, approx: pd.DataFrame, per_prompt: pd.DataFrame, top_n: int,
                        max_gap: float) -> dict:
    """How well the screen's scores pick the prompts an exact trace would: rank correlation of each score
    with the exact peak IE, recall of the exact top_n among each score's top_n, and whether the gap
    flags the prompts where AtP's (token, layer) ranking is poor (ρ < 0.5)."""
    se, sa = prompt_scores(exact).set_index("known_id"), prompt_scores(approx).set_index("known_id")
    common = se.index.intersection(sa.index)
    se, sa = se.loc[common], sa.loc[common]
    n = min(top_n, len(common))
    top_e = set(se["atp_peak"].nlargest(n).index)  # in the exact table this column is the exact peak IE
    rho = per_prompt.groupby("known_id")["spearman"].mean().loc[common]
    flagged = sa["gap"] > max_gap
    poor = rho < 0.5
    out = {"prompts": len(common), "top_n": n}
    for score in RANK_BY:
        out[score] = {"spearman_with_exact_peak": float(spearmanr(se["atp_peak"], sa[score]).statistic),
                      "top_n_recall": len(top_e & set(sa[score].nlargest(n).index)) / n if n else float("nan")}
    out["gap"] = {"max_gap": max_gap, "flagged": int(flagged.sum()), "poor_rho_prompts": int(poor.sum()),
                  "poor_flagged": int((poor & flagged).sum()),
                  "gap_vs_rho_spearman": float(spearmanr(sa["gap"], rho).statistic),
                  "mean_rho_flagged": float(rho[flagged].mean()), "mean_rho_unflagged": float(rho[~flagged].mean())}
    return out


def saturation(per_prompt: pd.DataFrame) -> dict:
    """Mean per-prompt ρ (over kinds) by how saturated the corrupted run's softmax is."""
    rho = per_prompt.groupby("known_id").agg(rho=("spearman", "mean"), p_corr=("p_corrupted", "first"),
                                             p_clean=("p_clean", "first"))
    bins = pd.cut(rho["p_corr"], [0, 0.01, 0.1, 1.0], include_lowest=True)
    out = {str(b): {"prompts": int(len(g)), "mean_rho": float(g["rho"].mean())}
           for b, g in rho.groupby(bins, observed=True)}
    out["rho_vs_p_corrupted_spearman"] = float(spearmanr(rho["p_corr"], rho["rho"]).statistic)
    out["rho_vs_total_effect_spearman"] = float(spearmanr(rho["p_clean"] - rho["p_corr"], rho["rho"]).statistic)
    return out


def validate(run_dir: Path, max_prompts: int | None, out: Path, graddrop_prompts: int, threads: int,
             variants: Sequence[str] = tuple(VARIANTS), subset_prompts: int = 10, top_n: int = 10,
             max_gap: float = ScreenRule.max_gap,  # the screen's own default, so the doc measures it
             category_mean: str = "rome") -> dict:
    """Plain AtP on every exactly traced prompt of ``run_dir``; the other variants on the first
    ``subset_prompts``, GradDrop on the first ``graddrop_prompts`` (L + 1 passes each). AIE maps are
    averaged as ``category_mean`` says (``stats.category_mean``)."""
    from .trace.atp import AtpConfig

    exact = read_exact(run_dir, max_prompts)
    ids = exact["known_id"].drop_duplicates()
    known = _known(run_dir).set_index("known_id").loc[ids].reset_index()
    kinds = [k for k in KIND_ORDER if k in set(exact["kind"])]
    results, seconds, tables = {}, {}, {}
    for name in ["AtP", *[v for v in variants if v != "AtP"]]:
        tracer = _tracer(run_dir, "atp", kinds, AtpConfig(**VARIANTS[name]), threads)
        recs = known if name == "AtP" else known.iloc[:subset_prompts]  # variants: a subset (CPU time)
        t0 = time.perf_counter()
        tables[name] = atp_table(tracer, recs)
        seconds[name] = (time.perf_counter() - t0) / len(recs)
        results[name] = compare(exact[exact["known_id"].isin(recs["known_id"])], tables[name],
                                category_mean=category_mean)
    if len(results) > 1:  # plain AtP on the variants' subset, for a like-for-like row
        sub = known["known_id"].iloc[:subset_prompts]
        results[f"AtP, first {len(sub)}"] = compare(exact[exact["known_id"].isin(sub)],
                                                   tables["AtP"][tables["AtP"]["known_id"].isin(sub)],
                                                   category_mean=category_mean)
        seconds[f"AtP, first {len(sub)}"] = seconds["AtP"]
    plain = tables["AtP"]
    magnitude = {}
    if graddrop_prompts:
        tracer = _tracer(run_dir, "atp", kinds, threads=threads)
        gd_ids = ids.iloc[:graddrop_prompts]
        sub_exact = exact[exact["known_id"].isin(gd_ids)]
        gd = graddrop_table(tracer, known[known["known_id"].isin(gd_ids)], sub_exact)
        absolute = sub_exact.assign(ie=lambda d: d["ie"].abs())
        magnitude = {"AtP |IE|": compare(absolute, plain[plain["known_id"].isin(gd_ids)].assign(
            ie=lambda d: d["ie"].abs()))[0], "GradDrop": compare(absolute, gd)[0]}
    summary = summarize(results, magnitude, seconds, len(ids), _load())
    summary["screening"] = screening_agreement(exact, plain, results["AtP"][0], top_n, max_gap)
    summary["saturation"] = saturation(results["AtP"][0])
    summary["aie_categories"] = results["AtP"][1].round(4).to_dict("records")
    out.parent.mkdir(parents=True, exist_ok=True)
    summary["category_mean"] = category_mean
    figure(exact, plain, results["AtP"][0], out.with_suffix(".png"), category_mean)
    results["AtP"][0].to_csv(out.with_name(out.stem + "_per_prompt.csv"), index=False, float_format="%.5g")
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def _stats(per_prompt: pd.DataFrame) -> dict:
    out = {}
    for kind, g in per_prompt.groupby("kind"):
        out[kind] = {"median_spearman": float(g["spearman"].median()), "mean_spearman": float(g["spearman"].mean()),
                     "q10_spearman": float(g["spearman"].quantile(0.1)),
                     "mean_top10_overlap": float(g["top_overlap"].mean())}
    return out


def summarize(results: dict, magnitude: dict, seconds: dict, n: int, load: str) -> dict:
    out = {"prompts": n, "load": load, "variants": {}}
    for name, (per_prompt, cats) in results.items():
        out["variants"][name] = {
            "prompts": int(per_prompt["known_id"].nunique()), "seconds_per_prompt": seconds[name],
            **_stats(per_prompt),
            "aie": {kind: {"max_rel_diff": float(g["rel_to_peak"].max()),
                           "peak_layer_agrees": int((g["exact_peak_layer"] == g["approx_peak_layer"]).sum()),
                           "categories": len(g)}
                    for kind, g in cats.groupby("kind")},
        }
    out["magnitude"] = {name: {"prompts": int(pp["known_id"].nunique()), **_stats(pp)}
                        for name, pp in magnitude.items()}
    return out


def figure(exact: pd.DataFrame, approx: pd.DataFrame, per_prompt: pd.DataFrame, path: Path,
           category_mean: str = "rome") -> None:
    """Per kind: exact AIE map, AtP AIE map (same colour scale) and the per-prompt ρ histogram."""
    from .report.figures import KIND_CMAPS, KIND_TITLES, category_mean_label, new_figure, save
    from .vocabulary import CATEGORIES, CATEGORY_LABELS

    n = per_prompt["known_id"].nunique()
    fig = new_figure((16, 10))  # off-screen: no pyplot, no backend chosen
    axes = fig.subplots(3, 3, gridspec_kw={"width_ratios": [1, 1, 0.6]})
    for i, kind in enumerate(KIND_ORDER):
        me, ma = aie_maps(exact, kind, category_mean), aie_maps(approx, kind, category_mean)
        L = len(next(iter(me.values())))
        mats = [np.array([m.get(c, np.full(L, np.nan)) for c in CATEGORIES]) for m in (me, ma)]
        vmax = np.nanmax(mats[0])
        for j, (mat, label) in enumerate(zip(mats, ["exact", "AtP (approximate)"], strict=True)):
            im = axes[i, j].imshow(mat, aspect="auto", cmap=KIND_CMAPS[kind], vmin=0, vmax=vmax,
                                   interpolation="nearest")
            axes[i, j].set_yticks(range(len(CATEGORIES)), [CATEGORY_LABELS[c] for c in CATEGORIES] if j == 0 else [])
            axes[i, j].set_title(f"{KIND_TITLES[kind]}: AIE, {label}")
            axes[i, j].set_xlabel("layer")
        fig.colorbar(im, ax=axes[i, :2], shrink=0.9, label="AIE (exact map's range)")
        rho = per_prompt.loc[per_prompt["kind"] == kind, "spearman"].dropna()
        axes[i, 2].hist(rho, bins=np.linspace(-1, 1, 41), color="0.4")
        axes[i, 2].axvline(rho.median(), color="C3", lw=1)
        axes[i, 2].set_title(f"ρ per prompt (median {rho.median():.2f})")
        axes[i, 2].set_xticks([-1, -0.5, 0, 0.5, 1])
        axes[i, 2].set_xlabel("ρ over the (token, layer) grid")
    fig.suptitle(f"SmolLM2-135M T→T, {n} Known prompts: exact causal tracing vs attribution patching\n"
                 f"(approximate), same prompts and noise; {category_mean_label(category_mean)}")
    save(fig, [path])


def time_all(run_dir: Path, kinds: Sequence[str], threads: int, max_prompts: int | None = None) -> dict:
    """AtP on every Known prompt of the run (or the first ``max_prompts``), all kinds, after a one-prompt
    warm-up. CPU seconds are reported beside wall seconds: on a shared machine they show what the
    prompts cost whatever else ran (wall ≈ CPU / threads on idle cores)."""
    tracer = _tracer(run_dir, "atp", kinds, threads=threads)
    known = _known(run_dir)
    atp_table(tracer, known.iloc[:1])
    if max_prompts is not None:
        known = known.iloc[:max_prompts]
    load0 = _load()
    t0, c0 = time.perf_counter(), time.process_time()
    ie = atp_table(tracer, known)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = max(1, len(known))
    return {"prompts": int(ie["known_id"].nunique()), "known_prompts": len(_known(run_dir)), "kinds": list(kinds),
            "threads": threads, "seconds": wall, "seconds_per_prompt": wall / n, "cpu_seconds": cpu,
            "cpu_seconds_per_prompt": cpu / n, "load_before": load0, "load_after": _load()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m crosstrace.approximation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["validate", "time"])
    ap.add_argument("--exact", type=Path, required=True, help="a traced run: results/<model>/<modality>")
    ap.add_argument("--prompts", type=int, default=None, help="only the first N prompts (validate: traced; time: known)")
    ap.add_argument("--graddrop-prompts", type=int, default=2, help="prompts for GradDrop (L backward passes each)")
    ap.add_argument("--subset-prompts", type=int, default=10, help="prompts for the variants other than plain AtP")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--category-mean", default="rome", choices=CATEGORY_MEANS,
                    help="how the AIE maps average a category's positions (stats.category_mean)")
    ap.add_argument("--out", type=Path, default=Path("docs/approximation.md"),
                    help="validate: the figure, JSON and per-prompt CSV are written beside this path")
    a = ap.parse_args(argv)
    if a.command == "validate":
        print(json.dumps(validate(a.exact, a.prompts, a.out, a.graddrop_prompts, a.threads, a.variants,
                                  a.subset_prompts, category_mean=a.category_mean)), flush=True)
    else:
        print(json.dumps(time_all(a.exact, KIND_ORDER, a.threads, a.prompts)), flush=True)


if __name__ == "__main__":
    main()

__all__ = ["ScreenRule", "completeness_gap", "compare", "grid_agreement", "prompt_scores", "screen", "top_k_overlap"]
