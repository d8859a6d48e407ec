# Speech → text for SpiritLM: WAVs → speech units per model, and the inputs the modality-aware rules
# (filter_known, noise_std) need. Its input functions live in common.smk (snakemake --lint: no functions
# among rules).


rule speech_units:
    input:
        manifest=f"{R}/speech/manifest/{{shard}}.parquet",
        wavs=f"{R}/speech/wav/{{shard}}",
        model=f"{R}/models/{{model}}.json",
    output:
        units=f"{R}/{{model}}/s2t/units/{{shard}}.parquet",
    log:
        f"{LOGS}/speech_units/{{model}}_{{shard}}.log",
    conda:
        "../../envs/crosstrace.yaml"
    threads: 2
    resources:
        gpu=gpus,
    script:
        "../../scripts/speech_units.py"
