rule download_known:
    output:
        f"{R}/data/known_1000.json",
    log:
        f"{LOGS}/download_known/download_known.log",
    conda:
        "../../envs/crosstrace.yaml"
    params:
        url=config["data"]["url"],
        sha256=config["data"]["sha256"],
        fallback=workflow_path(config["data"]["fallback"]),
    script:
        "../../scripts/download_known.py"


rule validate_known:
    input:
        rules.download_known.output[0],
    output:
        records=f"{R}/data/records.parquet",
        quarantine=f"{R}/data/quarantine.parquet",
    log:
        f"{LOGS}/validate_known/validate_known.log",
    conda:
        "../../envs/crosstrace.yaml"
    params:
        limit=config["data"]["limit"],
    script:
        "../../scripts/validate_known.py"
