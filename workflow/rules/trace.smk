rule trace:
    input:
        known=f"{R}/{{model}}/{{modality}}/known.parquet",
        noise=rules.noise_std.output[0],
        model=rules.prepare_model.output[0],
    output:
        ie=f"{R}/{{model}}/{{modality}}/shards/{{shard}}.parquet",
        quarantine=f"{R}/{{model}}/{{modality}}/shards/{{shard}}.quarantine.parquet",
    log:
        f"{LOGS}/trace/{{model}}_{{modality}}_{{shard}}.log",
    conda:
        "../../envs/crosstrace.yaml"
    threads: all_cores()
    resources:
        gpu=gpus,
    params:
        spec=model_spec,
        trace=trace_params(),
        # The shard's own prompts (trace_shards in common.smk): raising trace.max_prompts adds shards
        # and leaves finished ones alone.
        known_ids=trace_shard_ids,
    script:
        "../../scripts/trace_shard.py"


rule merge:
    input:
        shards=shard_outputs,
        known=f"{R}/{{model}}/{{modality}}/known.parquet",
        noise=rules.noise_std.output[0],
    output:
        ie=f"{R}/{{model}}/{{modality}}/ie_per_prompt.parquet",
        categories=f"{R}/{{model}}/{{modality}}/category_ie.parquet",
        aie=f"{R}/{{model}}/{{modality}}/aie.parquet",
        quarantine=f"{R}/{{model}}/{{modality}}/quarantine.parquet",
        summary=f"{R}/{{model}}/{{modality}}/summary.json",
    log:
        f"{LOGS}/merge/{{model}}_{{modality}}.log",
    conda:
        "../../envs/crosstrace.yaml"
    params:
        trace=trace_params(),
        stats={k: config["stats"][k] for k in ("n_boot", "seed", "level", "category_mean")},
        select={
            "require_known": config["filter"]["require_known"],
            "expect_answer": config["filter"]["expect_answer"],
        },
        on_empty=config["trace"]["on_empty"],
    script:
        "../../scripts/merge.py"
