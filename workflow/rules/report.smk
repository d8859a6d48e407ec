rule figures:
    input:
        aie=f"{R}/{{model}}/{{modality}}/aie.parquet",
        summary=f"{R}/{{model}}/{{modality}}/summary.json",
    output:
        expand(
            f"{R}/{{{{model}}}}/{{{{modality}}}}/figures/aie_{{kind}}.{{ext}}",
            kind=KINDS,
            ext=FORMATS,
        ),
    log:
        "logs/figures/{model}_{modality}.log",
    conda:
        "../../envs/crosstrace.yaml"
    script:
        "../../scripts/figures.py"
