import math
from pathlib import Path

import pandas as pd
from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

R = config["results"]


def workflow_path(p):
    """Relative paths in the config name files of this repository, wherever the run directory is."""
    return p if Path(p).is_absolute() or Path(p).exists() else str(Path(workflow.basedir) / p)


MODELS = {m["name"]: m for m in config["models"]}
if len(MODELS) != len(config["models"]):
    raise ValueError("config: model names must be unique")
for _name, _spec in MODELS.items():
    if "s2t" in _spec.get("modalities", ["t2t"]) and _spec.get("family", "hf") != "spiritlm":
        raise ValueError(f"config: model {_name!r} lists modality s2t, which needs family: spiritlm")
    if _spec.get("stray_space", False) and _spec.get("family", "hf") != "spiritlm":
        raise ValueError(f"config: model {_name!r}: stray_space applies to family spiritlm only")
    if "s2t" in _spec.get("modalities", ["t2t"]) and not config["speech"]["enabled"]:
        raise ValueError(f"config: model {_name!r} lists modality s2t, which needs speech.enabled: true")
if any("s2t" in s.get("modalities", ["t2t"]) for s in MODELS.values()) and config["speech"]["align"]["use"] not in config["speech"]["align"]["aligners"]:
    raise ValueError(f"config: speech.align.use {config['speech']['align']['use']!r} is not among "
                     f"speech.align.aligners {config['speech']['align']['aligners']}")
RUNS = [(m, mod) for m, spec in MODELS.items() for mod in spec["modalities"]]
KINDS = config["trace"]["kinds"]
FORMATS = config["figures"]["formats"]


wildcard_constraints:
    model="|".join(MODELS),
    modality="t2t|s2t",
    shard=r"\d+",
    kind="hidden|mlp|attn",


def model_spec(wildcards):
    return MODELS[wildcards.model]


def trace_params():
    """Everything that changes traced numbers; a change here reruns trace → merge → figures only."""
    t = config["trace"]
    return {
        "kinds": t["kinds"],
        "window": t["window"],
        "noise": t["noise"],
        "engine": t["engine"],
        "max_rows": t["max_rows"],
    }


def selected_count(wildcards):
    """Prompts to trace: known ones, capped by trace.max_prompts (read after the filter checkpoint)."""
    known = checkpoints.filter_known.get(model=wildcards.model, modality=wildcards.modality).output.table
    table = pd.read_parquet(known)
    if "status" in table.columns:  # S→T: records without a traceable spoken prompt are never traced
        table = table[table["status"] == "ok"]
    n = int(table["known"].sum()) if config["filter"]["require_known"] else len(table)
    cap = config["trace"]["max_prompts"]
    return n if cap is None else min(n, cap)


def shard_outputs(wildcards):
    n = selected_count(wildcards)
    size = config["trace"]["shard_size"]
    return expand(
        f"{R}/{{model}}/{{modality}}/shards/{{shard}}.parquet",
        model=wildcards.model,
        modality=wildcards.modality,
        shard=range(max(1, math.ceil(n / size))),
    )


def all_targets():
    out = [f"{R}/data/quarantine.parquet"]
    if config["speech"]["enabled"]:
        out += SPEECH_TARGETS
    for m, mod in RUNS:
        out += [
            f"{R}/{m}/{mod}/aie.parquet",
            f"{R}/{m}/{mod}/summary.json",
        ]
        out += expand(
            f"{R}/{m}/{mod}/figures/aie_{{kind}}.{{ext}}", kind=KINDS, ext=FORMATS
        )
    out += report_targets()  # panels, peaks, QC, comparisons (workflow/rules/report.smk)
    return out
