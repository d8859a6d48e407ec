checkpoint filter_known:
    input:
        unpack(filter_inputs),
    output:
        table=f"{R}/{{model}}/{{modality}}/known.parquet",
    log:
        f"{LOGS}/filter_known/{{model}}_{{modality}}.log",
    conda:
        "../../envs/crosstrace.yaml"
    threads: all_cores()
    resources:
        gpu=gpus,
    params:
        spec=model_spec,
        max_new_tokens=config["filter"]["max_new_tokens"],
        aligner=filter_aligner,
        rows=filter_rows,
    script:
        "../../scripts/filter_known.py"
