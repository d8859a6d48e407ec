# The facts to trace: the Known dataset (data.source: known), or the user's own file (any other
# data.source). Both end in the same records.parquet + quarantine.parquet.
if DATA["source"] == "known":

    rule download_known:
        output:
            f"{R}/data/known_1000.json",
        log:
            f"{LOGS}/download_known/download_known.log",
        conda:
            "../../envs/crosstrace.yaml"
        params:
            url=DATA["url"],
            sha256=DATA["sha256"],
            fallback=workflow_path(DATA["fallback"]),
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
            limit=DATA["limit"],
        script:
            "../../scripts/validate_known.py"

else:

    rule read_facts:
        input:
            facts=workflow_path(DATA["source"]),
        output:
            records=f"{R}/data/records.parquet",
            quarantine=f"{R}/data/quarantine.parquet",
        log:
            f"{LOGS}/read_facts/read_facts.log",
        conda:
            "../../envs/crosstrace.yaml"
        params:
            format=DATA["format"],
            columns=DATA["columns"],
            templates=DATA["templates"],
            sha256=DATA["file_sha256"],
            limit=DATA["limit"],
        script:
            "../../scripts/read_facts.py"
