# S→T per speech unit (a view the paper does not have): the traced IE at every LM position of the spoken
# prompt with the text token that owns each unit, and a figure of IE against unit position with the
# text-token boundaries. The AIE tables aggregate the same units by text token (rule merge).
# figure_outputs, CAPTIONS and s2t_shard_outputs come from common.smk.


rule unit_view:
    input:
        shards=s2t_shard_outputs,
        known=f"{R}/{{model}}/s2t/known.parquet",
    output:
        ie=f"{R}/{{model}}/s2t/ie_per_unit.parquet",
        figures=[
            p
            for kind in KINDS
            for p in figure_outputs(
                f"{R}/{{{{model}}}}/s2t/figures/ie_per_unit_{kind}.{{ext}}",
                "ie_per_unit.rst",
                "S→T per speech unit",
                "{model}",
                labels={"model": "{model}", "kind": kind},
            )
        ],
    log:
        f"{LOGS}/unit_view/{{model}}.log",
    wildcard_constraints:
        model="|".join(re.escape(m) for m in S2T_MODELS) or "no-s2t-models",
    conda:
        "../../envs/crosstrace.yaml"
    params:
        max_prompts=config["figures"]["unit_prompts"],
    script:
        "../../scripts/unit_view.py"
