rule prepare_model:
    output:
        f"{R}/models/{{model}}.json",
    log:
        f"{LOGS}/prepare_model/{{model}}.log",
    conda:
        "../../envs/crosstrace.yaml"
    params:
        spec=model_spec,
        cache_dir=config["cache_dir"],
    script:
        "../../scripts/prepare_model.py"


rule noise_std:
    input:
        unpack(noise_inputs),
    output:
        f"{R}/{{model}}/{{modality}}/noise.json",
    log:
        f"{LOGS}/noise_std/{{model}}_{{modality}}.log",
    conda:
        "../../envs/crosstrace.yaml"
    resources:
        gpu=gpus,
    params:
        spec=model_spec,
    script:
        "../../scripts/noise_std.py"
