"""Helpers of report.smk: which figure files go to the Snakemake report, stats.compare pairs, targets."""

import re

# Figures go to the Snakemake report (`snakemake --report report.html`) in one format: the first of
# png / svg / pdf that figures.formats asks for (the other formats are written all the same).
REPORT_EXT = next(e for e in ("png", "svg", "pdf") if e in FORMATS)
CAPTIONS = "../report"


def figure_outputs(pattern, caption, category, subcategory, labels=None, **expand_kw):
    """expand(pattern, ext=FORMATS, ...) with the REPORT_EXT files marked for the report."""
    out = []
    for p in expand(pattern, ext=FORMATS, **expand_kw):
        if p.endswith(f".{REPORT_EXT}"):
            lab = labels(p) if callable(labels) else labels
            p = report(
                p,
                caption=f"{CAPTIONS}/{caption}",
                category=category,
                subcategory=subcategory,
                labels=lab,
            )
        out.append(p)
    return out


def run_id(run):
    return f"{run['model']}_{run['modality']}"


# stats.compare: pair id → (a, b), each a (model, modality) that must be a configured run.
PAIRS = {}
for _c in config["stats"]["compare"]:
    for _side in (_c["a"], _c["b"]):
        if (_side["model"], _side["modality"]) not in RUNS:
            raise ValueError(
                f"stats.compare: {_side['model']} {_side['modality']} is not a configured run "
                f"(models[].name + modalities); runs: {RUNS}"
            )
    PAIRS[f"{run_id(_c['a'])}_vs_{run_id(_c['b'])}"] = (_c["a"], _c["b"])


def report_targets():
    """Everything the report shows; rule all asks for these (see all_targets in common.smk)."""
    out = [f"{R}/figures/aie_panels.{ext}" for ext in FORMATS]
    out += [
        f"{R}/tables/peaks.parquet",
        f"{R}/tables/peaks.html",
        f"{R}/report/config.html",
    ]
    for m, mod in RUNS:
        out += [f"{R}/{m}/{mod}/qc.html", f"{R}/{m}/{mod}/traced_prompts.html"]
        out += [f"{R}/{m}/{mod}/traced_prompts.parquet", f"{R}/{m}/{mod}/prompts"]
        out += expand(f"{R}/{m}/{mod}/figures/counts.{{ext}}", ext=FORMATS)
    for pair in PAIRS:
        out += [
            f"{R}/compare/{pair}/comparison.parquet",
            f"{R}/compare/{pair}/summary.json",
            f"{R}/compare/{pair}/summary.html",
        ]
        out += expand(f"{R}/compare/{pair}/diff.{{ext}}", ext=FORMATS)
    return out


def pair_inputs(wildcards):
    a, b = PAIRS[wildcards.pair]
    return {
        "cat_a": f"{R}/{a['model']}/{a['modality']}/category_ie.parquet",
        "cat_b": f"{R}/{b['model']}/{b['modality']}/category_ie.parquet",
        "aie_a": f"{R}/{a['model']}/{a['modality']}/aie.parquet",
        "aie_b": f"{R}/{b['model']}/{b['modality']}/aie.parquet",
    }
