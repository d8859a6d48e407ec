# Text vs speech representations of SpiritLM (issue 7): per layer, cosine and L2 distance between the T→T
# and S→T block outputs of the same prompt at matched positions, over the prompts in both Known sets.
# Runs for SIMILARITY_MODELS (common.smk); figure_outputs and CAPTIONS come from common.smk.


rule similarity:
    input:
        t2t=f"{R}/{{model}}/t2t/known.parquet",
        s2t=f"{R}/{{model}}/s2t/known.parquet",
        model=f"{R}/models/{{model}}.json",
    output:
        table=f"{R}/{{model}}/similarity/similarity.parquet",
        html=report(
            f"{R}/{{model}}/similarity/similarity.html",
            caption=f"{CAPTIONS}/similarity_table.rst",
            category="Representations",
            subcategory="{model}",
            labels={"model": "{model}", "content": "per-layer table"},
        ),
        figures=figure_outputs(
            f"{R}/{{{{model}}}}/similarity/similarity.{{ext}}",
            "similarity.rst",
            "Representations",
            "{model}",
            labels={"model": "{model}", "content": "cosine and L2 over layers"},
        ),
    log:
        f"{LOGS}/similarity/{{model}}.log",
    wildcard_constraints:
        model="|".join(re.escape(m) for m in SIMILARITY_MODELS) or "no-similarity-models",
    conda:
        "../../envs/crosstrace.yaml"
    threads: all_cores()
    resources:
        gpu=gpus,
    params:
        require_known=config["filter"]["require_known"],
        stats={
            "n_random": config["stats"]["similarity"]["n_random"],
            "n_boot": config["stats"]["similarity"]["n_boot"],
            "level": config["stats"]["level"],
            "seed": config["stats"]["seed"],
        },
    script:
        "../../scripts/similarity.py"
