import re

# Figures go to the Snakemake report (`snakemake --report report.html`) in one format: the first of
# png / svg / pdf that figures.formats asks for (the other formats are written all the same).
REPORT_EXT = next(e for e in ("png", "svg", "pdf") if e in FORMATS)
CAPTIONS = "../report"


def figure_outputs(pattern, caption, category, subcategory, labels=None, **expand_kw):
    """expand(pattern, ext=FORMATS, ...) with the REPORT_EXT files marked for the report."""
    out = []
    for p in expand(pattern, ext=FORMATS, **expand_kw):
        if p.endswith("." + REPORT_EXT):
            lab = labels(p) if callable(labels) else labels
            p = report(p, caption=f"{CAPTIONS}/{caption}", category=category, subcategory=subcategory,
                       labels=lab)
        out.append(p)
    return out


def run_id(run):
    return f"{run['model']}_{run['modality']}"


# stats.compare: pair id → (a, b), each a (model, modality) that must be a configured run.
PAIRS = {}
for _c in config["stats"]["compare"]:
    for _side in (_c["a"], _c["b"]):
        if (_side["model"], _side["modality"]) not in RUNS:
            raise ValueError(f"stats.compare: {_side['model']} {_side['modality']} is not a configured run "
                             f"(models[].name + modalities); runs: {RUNS}")
    PAIRS[f"{run_id(_c['a'])}_vs_{run_id(_c['b'])}"] = (_c["a"], _c["b"])


wildcard_constraints:
    pair="|".join(re.escape(p) for p in PAIRS) or "no-pairs-configured",


def report_targets():
    """Everything the report shows; rule all asks for these (see all_targets in common.smk)."""
    out = [f"{R}/figures/aie_panels.{ext}" for ext in FORMATS]
    out += [f"{R}/tables/peaks.parquet", f"{R}/tables/peaks.html", f"{R}/report/config.html"]
    for m, mod in RUNS:
        out += [f"{R}/{m}/{mod}/qc.html"]
        out += expand(f"{R}/{m}/{mod}/figures/counts.{{ext}}", ext=FORMATS)
    for pair in PAIRS:
        out += [f"{R}/compare/{pair}/comparison.parquet", f"{R}/compare/{pair}/summary.json",
                f"{R}/compare/{pair}/summary.html"]
        out += expand(f"{R}/compare/{pair}/diff.{{ext}}", ext=FORMATS)
    return out


rule figures:
    input:
        aie=f"{R}/{{model}}/{{modality}}/aie.parquet",
        summary=f"{R}/{{model}}/{{modality}}/summary.json",
    output:
        [
            p
            for kind in KINDS
            for p in figure_outputs(
                f"{R}/{{{{model}}}}/{{{{modality}}}}/figures/aie_{kind}.{{ext}}",
                "aie_heatmap.rst",
                "AIE heatmaps per run",
                "{model} {modality}",
                labels={"run": "{model} {modality}", "kind": kind},
            )
        ],
    params:
        mask_ci_zero=config["figures"]["mask_ci_zero"],
        ci_panel=config["figures"]["ci_panel"],
    log:
        "logs/figures/{model}_{modality}.log",
    conda:
        "../../envs/crosstrace.yaml"
    script:
        "../../scripts/figures.py"


rule qc:
    input:
        summary=f"{R}/{{model}}/{{modality}}/summary.json",
        quarantine=f"{R}/{{model}}/{{modality}}/quarantine.parquet",
        validation=rules.validate_known.output.quarantine,
    output:
        html=report(
            f"{R}/{{model}}/{{modality}}/qc.html",
            caption=f"{CAPTIONS}/qc.rst",
            category="Quality control",
            subcategory="{model} {modality}",
            labels={"run": "{model} {modality}", "content": "counts per stage (table)"},
        ),
        figures=figure_outputs(
            f"{R}/{{{{model}}}}/{{{{modality}}}}/figures/counts.{{ext}}",
            "counts.rst",
            "Quality control",
            "{model} {modality}",
            labels={"run": "{model} {modality}", "content": "counts per stage (figure)"},
        ),
    params:
        require_known=config["filter"]["require_known"],
        max_prompts=config["trace"]["max_prompts"],
    log:
        "logs/qc/{model}_{modality}.log",
    conda:
        "../../envs/crosstrace.yaml"
    script:
        "../../scripts/qc.py"


rule panels:
    input:
        aie=[f"{R}/{m}/{mod}/aie.parquet" for m, mod in RUNS],
        summaries=[f"{R}/{m}/{mod}/summary.json" for m, mod in RUNS],
    output:
        figure_outputs(
            f"{R}/figures/aie_panels.{{ext}}",
            "aie_panels.rst",
            "Overview",
            "AIE across runs",
        ),
    params:
        runs=RUNS,
        kinds=KINDS,
        mask_ci_zero=config["figures"]["mask_ci_zero"],
    log:
        "logs/panels/panels.log",
    conda:
        "../../envs/crosstrace.yaml"
    script:
        "../../scripts/panels.py"


rule peaks:
    input:
        aie=[f"{R}/{m}/{mod}/aie.parquet" for m, mod in RUNS],
    output:
        table=f"{R}/tables/peaks.parquet",
        html=report(
            f"{R}/tables/peaks.html",
            caption=f"{CAPTIONS}/peaks.rst",
            category="Overview",
            subcategory="Peaks",
        ),
    log:
        "logs/peaks/peaks.log",
    conda:
        "../../envs/crosstrace.yaml"
    script:
        "../../scripts/peaks.py"


def pair_inputs(wildcards):
    a, b = PAIRS[wildcards.pair]
    return {
        "cat_a": f"{R}/{a['model']}/{a['modality']}/category_ie.parquet",
        "cat_b": f"{R}/{b['model']}/{b['modality']}/category_ie.parquet",
        "aie_a": f"{R}/{a['model']}/{a['modality']}/aie.parquet",
        "aie_b": f"{R}/{b['model']}/{b['modality']}/aie.parquet",
    }


rule compare:
    input:
        unpack(pair_inputs),
    output:
        table=f"{R}/compare/{{pair}}/comparison.parquet",
        summary=f"{R}/compare/{{pair}}/summary.json",
        html=report(
            f"{R}/compare/{{pair}}/summary.html",
            caption=f"{CAPTIONS}/compare_summary.rst",
            category="Comparisons",
            subcategory="{pair}",
            labels={"comparison": "{pair}", "content": "peaks and significant cells"},
        ),
        figures=figure_outputs(
            f"{R}/compare/{{{{pair}}}}/diff.{{ext}}",
            "compare_diff.rst",
            "Comparisons",
            "{pair}",
            labels={"comparison": "{pair}", "content": "difference heatmaps"},
        ),
    params:
        pair=lambda wc: PAIRS[wc.pair],
        kinds=KINDS,
        stats={k: config["stats"][k] for k in ("n_perm", "seed", "alpha", "n_boot", "level")},
    log:
        "logs/compare/{pair}.log",
    conda:
        "../../envs/crosstrace.yaml"
    script:
        "../../scripts/compare.py"


rule report_config:
    output:
        report(
            f"{R}/report/config.html",
            caption=f"{CAPTIONS}/config.rst",
            category="Quality control",
            subcategory="Configuration",
        ),
    params:
        config=config,
    log:
        "logs/report_config/report_config.log",
    conda:
        "../../envs/crosstrace.yaml"
    script:
        "../../scripts/report_config.py"
