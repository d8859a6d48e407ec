rule prepare_model:
    output:
        f"{R}/models/{{model}}.json",
    params:
        spec=model_spec,
        cache_dir=config["cache_dir"],
    log:
        "logs/prepare_model/{model}.log",
    conda:
        "../../envs/crosstrace.yaml"
    script:
        "../../scripts/prepare_model.py"


rule noise_std:
    input:
        unpack(noise_inputs),
    output:
        f"{R}/{{model}}/{{modality}}/noise.json",
    params:
        spec=model_spec,
    resources:
        gpu=lambda wc: int(MODELS[wc.model].get("device", "cpu").startswith("cuda")),
    log:
        "logs/noise_std/{model}_{modality}.log",
    conda:
        "../../envs/crosstrace.yaml"
    script:
        "../../scripts/noise_std.py"
