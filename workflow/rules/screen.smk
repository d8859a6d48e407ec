# trace.screen: attribution patching (engine atp, approximate) on every prompt → the screen selects the
# prompts worth an exact trace → rule trace (trace.smk) traces only those. The approximate pass keeps its
# own tables and figures under {model}/{modality}/atp/, every title marked approximate.


rule trace_atp:
    input:
        known=f"{R}/{{model}}/{{modality}}/known.parquet",
        noise=rules.noise_std.output[0],
        model=rules.prepare_model.output[0],
    output:
        ie=f"{R}/{{model}}/{{modality}}/atp/shards/{{shard}}.parquet",
        quarantine=f"{R}/{{model}}/{{modality}}/atp/shards/{{shard}}.quarantine.parquet",
    log:
        f"{LOGS}/trace_atp/{{model}}_{{modality}}_{{shard}}.log",
    conda:
        "../../envs/crosstrace.yaml"
    threads: all_cores()
    resources:
        gpu=gpus,
    params:
        spec=model_spec,
        trace=trace_params(engine="atp"),
        known_ids=atp_shard_ids,
    script:
        "../../scripts/trace_shard.py"


rule merge_atp:
    input:
        shards=lambda w: shard_outputs(w, stage="atp/"),
        known=f"{R}/{{model}}/{{modality}}/known.parquet",
        noise=rules.noise_std.output[0],
    output:
        ie=f"{R}/{{model}}/{{modality}}/atp/ie_per_prompt.parquet",
        categories=f"{R}/{{model}}/{{modality}}/atp/category_ie.parquet",
        aie=f"{R}/{{model}}/{{modality}}/atp/aie.parquet",
        quarantine=f"{R}/{{model}}/{{modality}}/atp/quarantine.parquet",
        summary=f"{R}/{{model}}/{{modality}}/atp/summary.json",
    log:
        f"{LOGS}/merge_atp/{{model}}_{{modality}}.log",
    conda:
        "../../envs/crosstrace.yaml"
    params:
        trace=trace_params(engine="atp"),
        stats={k: config["stats"][k] for k in ("n_boot", "seed", "level", "category_mean")},
        select={
            "require_known": config["filter"]["require_known"],
            "expect_answer": config["filter"]["expect_answer"],
        },
        on_empty=config["trace"]["on_empty"],
    script:
        "../../scripts/merge.py"


rule figures_atp:
    input:
        aie=f"{R}/{{model}}/{{modality}}/atp/aie.parquet",
        summary=f"{R}/{{model}}/{{modality}}/atp/summary.json",
    output:
        [
            p
            for kind in KINDS
            for p in figure_outputs(
                f"{R}/{{{{model}}}}/{{{{modality}}}}/atp/figures/aie_{kind}.{{ext}}",
                "aie_heatmap_atp.rst",
                "AIE heatmaps per run",
                "{model} {modality}",
                labels={"run": "{model} {modality}", "kind": f"{kind} (approximate, AtP)"},
            )
        ],
    log:
        f"{LOGS}/figures_atp/{{model}}_{{modality}}.log",
    conda:
        "../../envs/crosstrace.yaml"
    params:
        mask_ci_zero=config["figures"]["mask_ci_zero"],
        ci_panel=config["figures"]["ci_panel"],
    script:
        "../../scripts/figures.py"


checkpoint screen:
    input:
        ie=f"{R}/{{model}}/{{modality}}/atp/ie_per_prompt.parquet",
    output:
        table=f"{R}/{{model}}/{{modality}}/screen.parquet",
    log:
        f"{LOGS}/screen/{{model}}_{{modality}}.log",
    conda:
        "../../envs/crosstrace.yaml"
    params:
        top_n=config["trace"]["screen"]["top_n"],
        max_gap=config["trace"]["screen"]["max_gap"],
        rank_by=config["trace"]["screen"]["rank_by"],
    script:
        "../../scripts/screen.py"
