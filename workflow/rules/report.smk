wildcard_constraints:
    pair="|".join(re.escape(p) for p in PAIRS) or "no-pairs-configured",


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
    log:
        f"{LOGS}/figures/{{model}}_{{modality}}.log",
    conda:
        "../../envs/crosstrace.yaml"
    params:
        mask_ci_zero=config["figures"]["mask_ci_zero"],
        ci_panel=config["figures"]["ci_panel"],
    script:
        "../../scripts/figures.py"


rule prompts:
    input:
        ie=f"{R}/{{model}}/{{modality}}/ie_per_prompt.parquet",
        known=f"{R}/{{model}}/{{modality}}/known.parquet",
        summary=f"{R}/{{model}}/{{modality}}/summary.json",
    output:
        figures=directory(f"{R}/{{model}}/{{modality}}/prompts"),
        table=f"{R}/{{model}}/{{modality}}/traced_prompts.parquet",
        html=report(
            f"{R}/{{model}}/{{modality}}/traced_prompts.html",
            caption=f"{CAPTIONS}/prompts.rst",
            category="Traced prompts",
            subcategory="{model} {modality}",
            labels={
                "run": "{model} {modality}",
                "content": "table and heatmaps",
            },
        ),
    log:
        f"{LOGS}/prompts/{{model}}_{{modality}}.log",
    conda:
        "../../envs/crosstrace.yaml"
    params:
        gallery=config["figures"]["gallery"],
        formats=[REPORT_EXT] + [e for e in FORMATS if e != REPORT_EXT],
        require_known=config["filter"]["require_known"],
        expect_answer=config["filter"]["expect_answer"],
    script:
        "../../scripts/prompts.py"


rule qc:
    input:
        summary=f"{R}/{{model}}/{{modality}}/summary.json",
        quarantine=f"{R}/{{model}}/{{modality}}/quarantine.parquet",
        validation=f"{R}/data/quarantine.parquet",
    output:
        html=report(
            f"{R}/{{model}}/{{modality}}/qc.html",
            caption=f"{CAPTIONS}/qc.rst",
            category="Quality control",
            subcategory="{model} {modality}",
            labels={
                "run": "{model} {modality}",
                "content": "counts per stage (table)",
            },
        ),
        figures=figure_outputs(
            f"{R}/{{{{model}}}}/{{{{modality}}}}/figures/counts.{{ext}}",
            "counts.rst",
            "Quality control",
            "{model} {modality}",
            labels={
                "run": "{model} {modality}",
                "content": "counts per stage (figure)",
            },
        ),
    log:
        f"{LOGS}/qc/{{model}}_{{modality}}.log",
    conda:
        "../../envs/crosstrace.yaml"
    params:
        require_known=config["filter"]["require_known"],
        max_prompts=config["trace"]["max_prompts"],
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
    log:
        f"{LOGS}/panels/panels.log",
    conda:
        "../../envs/crosstrace.yaml"
    params:
        runs=RUNS,
        kinds=KINDS,
        mask_ci_zero=config["figures"]["mask_ci_zero"],
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
        f"{LOGS}/peaks/peaks.log",
    conda:
        "../../envs/crosstrace.yaml"
    script:
        "../../scripts/peaks.py"


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
    log:
        f"{LOGS}/compare/{{pair}}.log",
    conda:
        "../../envs/crosstrace.yaml"
    params:
        pair=lambda wc: PAIRS[wc.pair],
        kinds=KINDS,
        stats={k: config["stats"][k] for k in ("n_perm", "seed", "alpha", "n_boot", "level", "category_mean")},
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
    log:
        f"{LOGS}/report_config/report_config.log",
    conda:
        "../../envs/crosstrace.yaml"
    params:
        config=config_without_speed_settings(),
        speed_only=SPEED_ONLY,
    script:
        "../../scripts/report_config.py"
