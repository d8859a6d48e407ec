checkpoint filter_known:
    input:
        unpack(filter_inputs),
    output:
        table=f"{R}/{{model}}/{{modality}}/known.parquet",
    params:
        spec=model_spec,
        max_new_tokens=config["filter"]["max_new_tokens"],
        batch_size=config["filter"]["batch_size"],
        aligner=config["speech"]["align"]["use"],
    threads: workflow.cores
    resources:
        gpu=lambda wc: int(MODELS[wc.model].get("device", "cpu").startswith("cuda")),
    log:
        "logs/filter_known/{model}_{modality}.log",
    conda:
        "../../envs/crosstrace.yaml"
    script:
        "../../scripts/filter_known.py"
