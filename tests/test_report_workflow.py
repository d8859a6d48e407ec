"""Statistics and report integration: one real Snakemake run on two tiny random models (shared by the module).

Runs the whole DAG (validate → filter → noise → trace → merge with bootstrap CIs → figures, panels, peaks,
QC, a paired comparison) and then `snakemake --report`. About 2-4 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, make_tiny_model_dir

from crosstrace.report.stats import aie_table

pytestmark = pytest.mark.slow

RUNS = [("tiny-a", "t2t"), ("tiny-b", "t2t")]
N_PROMPTS = 3
STATS = {"n_boot": 200, "seed": 7, "level": 0.9, "n_perm": 500, "alpha": 0.05}


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
           "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "results" / "logs").rglob("*.log")))
        pytest.fail(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-6000:]}\n{logs}")
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if os.environ.get("CROSSTRACE_REPORT_RUN"):  # development: reuse a finished run directory
        return Path(os.environ["CROSSTRACE_REPORT_RUN"])
    wd = tmp_path_factory.mktemp("report_run")
    models = []
    for i, (name, _) in enumerate(RUNS):
        models.append({"name": name, "path": str(make_tiny_model_dir(wd / "models" / name, seed=i))})
    cfg = {
        "results": "results",
        "data": {"limit": 6},
        "models": models,
        "filter": {"require_known": False, "max_new_tokens": 3},
        "trace": {"window": 2, "noise": {"samples": 2}, "max_prompts": N_PROMPTS, "shard_size": N_PROMPTS},
        "figures": {"formats": ["png", "pdf"], "mask_ci_zero": True},
        "speech": {"enabled": False},
        "stats": {**STATS, "compare": [{"a": {"model": "tiny-a", "modality": "t2t"},
                                        "b": {"model": "tiny-b", "modality": "t2t"}}]},
    }
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(wd)
    snakemake(wd, "--report", str(wd / "report.html"))
    return wd


def test_aie_has_bootstrap_cis(run):
    for m, mod in RUNS:
        d = run / "results" / m / mod
        aie = pd.read_parquet(d / "aie.parquet")
        assert list(aie.columns) == ["model", "modality", "kind", "category", "layer", "aie", "n", "n_positions",
                                     "ci_low", "ci_high", "answer_mode", "category_mean"]
        assert set(aie["answer_mode"]) == {"top1"} and set(aie["category_mean"]) == {"rome"}  # the defaults, recorded
        assert len(aie) > 0 and aie[["aie", "ci_low", "ci_high"]].notna().all().all()
        tol = 1e-12
        assert (aie["ci_low"] <= aie["aie"] + tol).all() and (aie["aie"] <= aie["ci_high"] + tol).all()
        assert (aie["ci_high"] > aie["ci_low"]).any(), "3 random prompts should give CIs of positive width"
        # n = prompts having the category (the per-prompt category table is the reference)
        cats = pd.read_parquet(d / "category_ie.parquet")
        assert cats["known_id"].nunique() == N_PROMPTS
        want = (cats.dropna(subset=["ie"]).groupby(["kind", "category", "layer"])["known_id"].nunique())
        got = aie.set_index(["kind", "category", "layer"])["n"]
        pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False, check_dtype=False)
        assert aie.loc[aie["category"] == "last", "n"].eq(N_PROMPTS).all()
        # same seed → the same table; a different seed → different CIs, same means
        again = aie_table(cats, n_boot=STATS["n_boot"], seed=STATS["seed"], level=STATS["level"])
        pd.testing.assert_frame_equal(again, aie)
        narrow = aie_table(cats, n_boot=STATS["n_boot"], seed=STATS["seed"], level=0.5)
        np.testing.assert_allclose(narrow["aie"], aie["aie"])
        assert (narrow["ci_low"] >= aie["ci_low"] - tol).all() and (narrow["ci_high"] <= aie["ci_high"] + tol).all()


def test_rerun_merge_is_bitwise_identical(run, tmp_path):
    """Rerunning the merge rule with the same seed writes the same aie.parquet, byte for byte."""
    aie = run / "results" / "tiny-a" / "t2t" / "aie.parquet"
    before = aie.read_bytes()
    snakemake(run, "--forcerun", "merge", "--until", "merge")
    assert aie.read_bytes() == before


def test_compare(run):
    d = run / "results" / "compare" / "tiny-a_t2t_vs_tiny-b_t2t"
    comp = pd.read_parquet(d / "comparison.parquet")
    assert len(comp) > 0
    assert comp["n"].max() == N_PROMPTS and comp.loc[comp["category"] == "last", "n"].eq(N_PROMPTS).all()
    assert comp["q"].between(0, 1).all() and comp["p"].between(0, 1).all()
    assert (comp["q"] >= comp["p"] - 1e-12).all()
    assert set(comp["kind"]) == {"hidden", "mlp", "attn"}
    # the difference is a − b of the two runs' AIE over the shared prompts (all prompts here)
    a = pd.read_parquet(run / "results" / "tiny-a" / "t2t" / "aie.parquet").set_index(["kind", "category", "layer"])
    b = pd.read_parquet(run / "results" / "tiny-b" / "t2t" / "aie.parquet").set_index(["kind", "category", "layer"])
    c = comp.set_index(["kind", "category", "layer"])
    np.testing.assert_allclose(c["diff"], (a["aie"] - b["aie"]).loc[c.index], atol=1e-12)
    summary = json.loads((d / "summary.json").read_text())
    assert summary["n_pairs"] == N_PROMPTS
    assert set(summary["peak_ratios"]) == {"hidden", "mlp", "attn"}
    assert {(p["model"], p["kind"]) for p in summary["peaks"]} == {(m, k) for m, _ in RUNS for k in ("hidden", "mlp", "attn")}
    for ext in ("png", "pdf"):
        assert (d / f"diff.{ext}").stat().st_size > 5000
    assert "tiny-a T→T vs tiny-b T→T" in (d / "summary.html").read_text()


def test_panels_peaks_qc(run):
    r = run / "results"
    for ext in ("png", "pdf"):
        assert (r / "figures" / f"aie_panels.{ext}").stat().st_size > 10000
    assert (r / "figures" / "aie_panels.pdf").read_bytes()[:5] == b"%PDF-"
    peaks = pd.read_parquet(r / "tables" / "peaks.parquet")
    assert len(peaks) == len(RUNS) * 3
    for m, mod in RUNS:
        aie = pd.read_parquet(r / m / mod / "aie.parquet")
        for _, p in peaks[peaks["model"] == m].iterrows():
            assert p["peak_aie"] == pytest.approx(aie.loc[aie["kind"] == p["kind"], "aie"].max())
        html = (r / m / mod / "qc.html").read_text()
        summary = json.loads((r / m / mod / "summary.json").read_text())
        assert summary["ci"]["n_boot"] == STATS["n_boot"]
        assert f"<td>traced</td><td class=\"num\">{N_PROMPTS}</td>" in html
        assert "<td>valid records</td><td class=\"num\">6</td>" in html
        assert (r / m / mod / "figures" / "counts.png").exists()
        for kind in ("hidden", "mlp", "attn"):
            assert (r / m / mod / "figures" / f"aie_{kind}.png").exists()


def test_report_html(run):
    raw = (run / "report.html").read_text(encoding="utf-8")
    assert len(raw) > 100_000
    # captions sit in the page as JSON strings: undo \n and \uXXXX escapes before searching
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), raw.replace("\\n", " "))
    for fragment in (
        "laid out as the paper's Figure 2",  # aie_panels.rst
        "Black dots mark cells",  # compare_diff.rst
        "Quality control for <strong>tiny-a t2t</strong>",  # qc.rst, wildcards filled in
        "cells with AIE ≤ 0 cannot be logged",  # aie_heatmap.rst
        "Gaussian on the subject embeddings, 2 draws per prompt",  # config values filled in
        "runs causal tracing",  # workflow.rst
        "resamples, level 0.9",  # workflow.rst, stats config
    ):
        assert fragment in text, fragment
    for name in ("aie_panels.png", "diff.png", "qc.html", "counts.png", "aie_mlp.png", "peaks.html", "config.html",
                 "traced_prompts.html"):
        assert name in raw, name
