# Speech → text for SpiritLM: WAVs → speech units per model, and the inputs the modality-aware rules
# (filter_known, noise_std) need. Needs from common.smk / speech.smk: R, MODELS, SPEECH, speech_shard_ids.


def units_shards(wildcards):
    return expand(f"{R}/{{model}}/s2t/units/{{shard}}.parquet", model=wildcards.model, shard=speech_shard_ids())


def manifest_shards(wildcards):
    return expand(f"{R}/speech/manifest/{{shard}}.parquet", shard=speech_shard_ids())


def filter_inputs(wildcards):
    """T→T: the validated records. S→T also: speech selection, manifests, QC, alignment, units."""
    inp = {"records": f"{R}/data/records.parquet", "model": f"{R}/models/{wildcards.model}.json"}
    if wildcards.modality == "s2t":
        inp.update(
            speech_records=f"{R}/speech/records.parquet",
            manifest=manifest_shards(wildcards),
            qc=speech_qc_shards(wildcards),
            alignment=f"{R}/speech/alignment.parquet",
            units=units_shards(wildcards),
        )
    return inp


def noise_inputs(wildcards):
    """T→T: std over the dataset's subjects; S→T: over the unit tokens in the S→T subject spans (known table)."""
    records = (f"{R}/{wildcards.model}/s2t/known.parquet" if wildcards.modality == "s2t"
               else f"{R}/data/records.parquet")
    return {"records": records, "model": f"{R}/models/{wildcards.model}.json"}


rule speech_units:
    input:
        manifest=f"{R}/speech/manifest/{{shard}}.parquet",
        wavs=f"{R}/speech/wav/{{shard}}",
        model=f"{R}/models/{{model}}.json",
    output:
        units=f"{R}/{{model}}/s2t/units/{{shard}}.parquet",
    threads: 2
    resources:
        gpu=lambda wc: int(MODELS[wc.model].get("device", "cpu").startswith("cuda")),
    log:
        "logs/speech_units/{model}_{shard}.log",
    conda:
        "../../envs/crosstrace.yaml"
    script:
        "../../scripts/speech_units.py"
