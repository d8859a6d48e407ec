"""The reference study shipped with the repository: export a finished run, and check its signature.

``make study`` traces the offline model on its Known-t2t facts (config/study.yaml) and calls
:func:`export_study`, which copies the small tables and the panel figure of one run into
``docs/results/<model>/`` with the exact config, commit, wall time and machine. :func:`recall_signature`
states, as numbers, the pattern ROME found on GPT models (Meng et al. 2022, Fig. 1–2), so a test can read
the committed tables and check that the tool recovers it:

1. MLP AIE at the last subject token peaks in early-to-middle layers (first 60 % of the depth), with a
   bootstrap CI that excludes 0 at the peak;
2. hidden-state AIE moves from the subject tokens (early third of the layers: a subject category beats the
   last token) to the last token (late third: the last token beats every subject category);
3. attention AIE concentrates at the last token in later layers (second half: the last token holds the
   largest attention AIE of all categories at most layers, and its peak CI excludes 0).
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from ..spans import category_positions
from ..vocabulary import CATEGORIES
from .figures import panel_figure, panel_title, save
from .stats import CATEGORY_COLUMNS, CATEGORY_MEANS, aie_table, peak_summary

SUBJECT_CATEGORIES = ("first_subject", "middle_subject", "last_subject")
#: "early-to-middle": the peak layer lies in the first EARLY_TO_MIDDLE fraction of the depth
EARLY_TO_MIDDLE = 0.6


@dataclass(frozen=True)
class Check:
    """One part of the signature: whether it holds, and the numbers behind the verdict."""

    name: str
    holds: bool
    detail: str


def _grid(aie: pd.DataFrame, kind: str, column: str = "aie") -> pd.DataFrame:
    """categories × layers of one kind (a single run)."""
    d = aie[aie["kind"] == kind]
    g = d.pivot_table(index="category", columns="layer", values=column, aggfunc="first")
    return g.reindex([c for c in CATEGORIES if c in g.index])


def recall_signature(aie: pd.DataFrame) -> list[Check]:
    """The three parts of ROME's factual-recall signature on one run's AIE table (see module docstring)."""
    runs = aie[["model", "modality"]].drop_duplicates()
    if len(runs) != 1:
        raise ValueError(f"recall_signature needs one run's AIE table, got {len(runs)} runs")
    L = int(aie["layer"].max()) + 1
    checks = []

    mlp, lo = _grid(aie, "mlp").loc["last_subject"], _grid(aie, "mlp", "ci_low").loc["last_subject"]
    peak = int(mlp.idxmax())
    checks.append(Check(
        "mlp_last_subject_peaks_early",
        bool(peak < EARLY_TO_MIDDLE * L and lo[peak] > 0),
        f"MLP AIE at the last subject token peaks at layer {peak} of {L} (AIE {mlp[peak]:.4f}, "
        f"CI low {lo[peak]:.4f}); early-to-middle means layer < {EARLY_TO_MIDDLE * L:.0f}",
    ))

    hid = _grid(aie, "hidden")
    early, late = hid.columns[hid.columns < L / 3], hid.columns[hid.columns >= 2 * L / 3]
    subj = [c for c in SUBJECT_CATEGORIES if c in hid.index]
    e_subj, e_last = hid.loc[subj, early].mean(axis=1).max(), hid.loc["last", early].mean()
    l_subj, l_last = hid.loc[subj, late].mean(axis=1).max(), hid.loc["last", late].mean()
    checks.append(Check(
        "hidden_moves_subject_to_last",
        bool(e_subj > e_last and l_last > l_subj),
        f"hidden AIE, layers < {L / 3:.0f}: best subject category {e_subj:.4f} vs last token {e_last:.4f}; "
        f"layers >= {2 * L / 3:.0f}: last token {l_last:.4f} vs best subject category {l_subj:.4f}",
    ))

    att, att_lo = _grid(aie, "attn"), _grid(aie, "attn", "ci_low")
    second = att.columns[att.columns >= L / 2]
    wins = int((att[second].idxmax(axis=0) == "last").sum())
    top = int(att.loc["last", second].idxmax())
    checks.append(Check(
        "attn_at_last_token_late",
        bool(wins > len(second) / 2 and att_lo.loc["last", top] > 0),
        f"attention AIE, layers >= {L / 2:.0f}: the last token is the top category at {wins} of "
        f"{len(second)} layers; its peak is layer {top} (AIE {att.loc['last', top]:.4f}, CI low "
        f"{att_lo.loc['last', top]:.4f})",
    ))
    return checks


def _git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty else "")


def machine() -> str:
    """A one-line description of this machine (CPU model and count, OS, Python, torch)."""
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python "
            f"{platform.python_version()}, torch {torch.__version__}")


def export_study(results: str | Path, model: str, out: str | Path, config: Mapping, wall_s: float | None = None,
                 commit: str | None = None, repo: str | Path = ".", note: str | None = None) -> dict:
    """Copy one T→T run of a finished study into ``out`` (small tables, panel figure, provenance).

    Writes ``aie.csv`` (AIE with bootstrap CIs), ``category_ie.parquet`` (IE per prompt, kind, category,
    layer), ``peaks.csv``, ``prompts.csv`` (the traced prompts with answer, P_clean, P_corrupted),
    ``aie_panels.{png,pdf}``, ``signature.json`` and ``provenance.json`` (config, commit, wall time, machine).
    """
    results, out = Path(results), Path(out)
    run = results / model / "t2t"
    out.mkdir(parents=True, exist_ok=True)
    aie = pd.read_parquet(run / "aie.parquet")
    aie.to_csv(out / "aie.csv", index=False, float_format="%.6g")
    pd.read_parquet(run / "category_ie.parquet").to_parquet(out / "category_ie.parquet", index=False)
    pd.read_parquet(results / "tables" / "peaks.parquet").to_csv(out / "peaks.csv", index=False, float_format="%.6g")
    ie = pd.read_parquet(run / "ie_per_prompt.parquet",
                         columns=["known_id", "answer", "p_clean", "p_corrupted", "subject_start", "subject_end",
                                  "n_tokens"])
    prompts = ie.drop_duplicates("known_id").sort_values("known_id")
    known = pd.read_parquet(run / "known.parquet", columns=["known_id", "prompt", "subject", "attribute", "label"])
    prompts = known.merge(prompts, on="known_id", how="inner")
    prompts.to_csv(out / "prompts.csv", index=False, float_format="%.6g")
    for ext in ("png", "pdf"):
        src = results / "figures" / f"aie_panels.{ext}"
        if src.exists():
            shutil.copyfile(src, out / src.name)
    checks = recall_signature(aie)
    (out / "signature.json").write_text(json.dumps([asdict(c) for c in checks], indent=2) + "\n", encoding="utf-8")
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    provenance = {
        "commit": commit or _git_commit(Path(repo)),
        "config": dict(config),
        "wall_time_s": None if wall_s is None else round(float(wall_s)),
        "machine": machine(),
        "note": note,
        "prompts_traced": int(prompts["known_id"].nunique()),
        "summary": summary,
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True, default=str) + "\n",
                                         encoding="utf-8")
    return provenance


def complete_category_table(cats: pd.DataFrame, prompts: pd.DataFrame, answer_mode: str = "top1") -> pd.DataFrame:
    """A category table written before it carried ``n_positions``, ``p_restored``, ``p_corrupted`` and
    ``answer_mode`` (columns it has are kept), completed from the traced-prompts table (``prompts.csv``: subject span, ``n_tokens``,
    P_corrupted per prompt), so that either averaging can be computed from it.

    ``n_positions`` comes from the span (:func:`crosstrace.spans.category_positions`), and the mean P_restored
    over a category's positions is its mean IE + P_corrupted (IE = P_restored − P_corrupted at every position,
    both averaged over the same noise draws). Prompts missing from ``prompts`` are an error."""
    per = prompts.set_index("known_id")
    missing = sorted(set(cats["known_id"]) - set(per.index))
    if missing:
        raise ValueError(f"known_id {missing[:10]} of the category table are not in the prompts table")
    n_pos = {}
    for kid, r in per.iterrows():
        cats_of = category_positions((int(r["subject_start"]), int(r["subject_end"])), int(r["n_tokens"]))
        n_pos.update({(kid, c): len(v) for c, v in cats_of.items()})
    out = cats.copy()
    if "answer_mode" not in out:
        out["answer_mode"] = answer_mode
    if "n_positions" not in out:
        out["n_positions"] = [n_pos[(k, c)] for k, c in zip(out["known_id"], out["category"], strict=True)]
    if "p_corrupted" not in out:
        out["p_corrupted"] = out["known_id"].map(per["p_corrupted"]).astype(float)
    if "p_restored" not in out:
        out["p_restored"] = out["ie"] + out["p_corrupted"]
    if "token_rows" not in out:  # a T→T study: its rows are the prompt's own tokens
        out["token_rows"] = None
    return out[CATEGORY_COLUMNS]


def regenerate_study(out: str | Path, category_mean: str = "rome", commit: str | None = None,
                     repo: str | Path = ".") -> list[Check]:
    """Recompute an exported study's AIE, peaks, signature and panel figure from its committed
    ``category_ie.parquet`` and ``prompts.csv`` (no model runs), averaged as ``category_mean`` says.

    The category table is completed where it predates the pooled-mean columns
    (:func:`complete_category_table`), every table then records ``answer_mode`` and ``category_mean``,
    the summary in ``provenance.json`` gains both, and ``provenance.json`` says what was regenerated when."""
    out = Path(out)
    commit = commit or _git_commit(Path(repo))  # before writing: the outputs would make the checkout dirty
    prov = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    cfg, summary = prov["config"], prov["summary"]
    answer = summary.get("answer") or cfg["trace"].get("answer") or "top1"  # top1: the only mode before the setting
    cats = complete_category_table(pd.read_parquet(out / "category_ie.parquet"), pd.read_csv(out / "prompts.csv"),
                                   answer)
    st = cfg["stats"]
    aie = aie_table(cats, n_boot=st["n_boot"], seed=st["seed"], level=st["level"], category_mean=category_mean)
    cats.to_parquet(out / "category_ie.parquet", index=False)
    aie.to_csv(out / "aie.csv", index=False, float_format="%.6g")
    peak_summary(aie).to_csv(out / "peaks.csv", index=False, float_format="%.6g")
    summary.update(answer=answer, category_mean=category_mean)
    meta = {(summary["model"], summary["modality"]): summary}
    fig = panel_figure(aie, list(meta), summary["kinds"], shared_scale=True, meta=meta,
                       mask_ci_zero=cfg.get("figures", {}).get("mask_ci_zero", False))
    fig.suptitle(panel_title(meta))
    save(fig, [out / "aie_panels.png", out / "aie_panels.pdf"])
    checks = recall_signature(aie)
    (out / "signature.json").write_text(json.dumps([asdict(c) for c in checks], indent=2) + "\n", encoding="utf-8")
    prov["regenerated"] = {
        "commit": commit,
        "category_mean": category_mean,
        "files": ["category_ie.parquet", "aie.csv", "peaks.csv", "aie_panels.png", "aie_panels.pdf", "signature.json"],
        "how": "python -m crosstrace.report.study --regenerate: AIE, CIs, peaks, signature and figure recomputed "
               "from the committed category_ie.parquet and prompts.csv (no tracing); stats as in config",
    }
    (out / "provenance.json").write_text(json.dumps(prov, indent=2, sort_keys=True, default=str) + "\n",
                                         encoding="utf-8")
    return checks


def _main(argv: list[str] | None = None) -> int:
    import argparse

    import yaml

    ap = argparse.ArgumentParser(prog="python -m crosstrace.report.study",
                                 description="Export a finished study run into docs/results/<model>/.")
    ap.add_argument("--results", default="results/study", help="the study's results directory")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default="docs/results/smollm2-135m")
    ap.add_argument("--config", nargs="+", default=["config.yaml", "config/study.yaml"],
                    help="config files of the run, later ones override earlier ones (as snakemake --configfile)")
    ap.add_argument("--wall-seconds", type=float, default=None)
    ap.add_argument("--commit", default=None, help="default: git HEAD of this checkout")
    ap.add_argument("--note", default=None, help="how the run was made (load, interruptions), kept in provenance.json")
    ap.add_argument("--regenerate", action="store_true",
                    help="recompute --out's AIE, peaks, signature and figure from its committed category_ie.parquet "
                         "and prompts.csv (no --results needed)")
    ap.add_argument("--category-mean", default="rome", choices=CATEGORY_MEANS,
                    help="with --regenerate: how category positions are averaged (stats.category_mean)")
    a = ap.parse_args(argv)
    if a.regenerate:
        for c in regenerate_study(a.out, a.category_mean, a.commit):
            print(f"{'holds' if c.holds else 'DOES NOT HOLD'}: {c.name}: {c.detail}")
        return 0
    config: dict = {}
    for f in a.config:
        _merge(config, yaml.safe_load(Path(f).read_text(encoding="utf-8")) or {})
    prov = export_study(a.results, a.model, a.out, config, a.wall_seconds, a.commit, note=a.note)
    for c in recall_signature(pd.read_csv(Path(a.out) / "aie.csv")):
        print(f"{'holds' if c.holds else 'DOES NOT HOLD'}: {c.name}: {c.detail}")
    print(f"exported {prov['prompts_traced']} prompts to {a.out}")
    return 0


def _merge(base: dict, new: Mapping) -> None:
    """Snakemake's config update: nested mappings merge key by key, anything else replaces."""
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


if __name__ == "__main__":
    raise SystemExit(_main())

