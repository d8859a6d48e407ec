import os
import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from snakemake.utils import validate

from crosstrace.config import check, runs
from crosstrace.devices import share_devices_in
from crosstrace.filtering import select_for_trace
from crosstrace.offline import hub_models
from crosstrace.shards import shard_blocks
from crosstrace.vocabulary import KINDS as VOCAB_KINDS
from crosstrace.vocabulary import MODALITIES, wildcard_pattern

validate(config, schema="../schemas/config.schema.yaml")

R = config["results"]
DATA = config["data"]
# Job logs live with the results they explain: two runs into different result directories never share
# (or overwrite) a log.
LOGS = f"{R}/logs"


def workflow_path(p):
    """Relative paths in the config name files of this repository, wherever the run directory is."""
    return p if Path(p).is_absolute() or Path(p).exists() else str(Path(workflow.basedir) / p)


# Every rule that relates two keys (model families and modalities, speech source and aligners, screen and
# engine, stats.compare runs) is checked once, by the package: crosstrace.config.check.
SPECS = check(config)
MODELS = {m["name"]: m for m in config["models"]}
# A local run with cuda models: each GPU job takes its own device for its lifetime, so `--resources gpu=N`
# on a machine with N GPUs runs N jobs on N devices (crosstrace.devices: lock-file slots over
# CROSSTRACE_GPUS / CUDA_VISIBLE_DEVICES / nvidia-smi). Cluster jobs keep the devices Slurm gives them. A
# model pinned to a device (`device: cuda:1`) keeps its pin: then the jobs share no slots.
CUDA_DEVICES = {spec.device for spec in SPECS.values() if spec.cuda}
if CUDA_DEVICES == {"cuda"}:
    share_devices_in(workflow)
# Offline when every model is on this machine, so nothing reaches for the network; with a hub model the hub is
# allowed (an explicit HF_HUB_OFFLINE=1 still wins: hub models then load from the HF cache). Jobs inherit it.
if not hub_models(config, workflow_path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
RUNS = runs(config)
# Models traced on S→T: their per-unit view (rule unit_view, workflow/rules/unit_view.smk).
S2T_MODELS = [name for name, spec in SPECS.items() if "s2t" in spec.modalities]
# Models traced on both T→T and S→T (s2t implies a speech family): their text and speech states are compared
# layer by layer (rule similarity, workflow/rules/similarity.smk).
SIMILARITY_MODELS = (
    [name for name, spec in SPECS.items() if {"t2t", "s2t"} <= set(spec.modalities)]
    if config["stats"]["similarity"]["enabled"]
    else []
)
KINDS = config["trace"]["kinds"]
# trace.screen: attribution patching (approximate) on every prompt, exact tracing on the selected ones
# (workflow/rules/screen.smk).
SCREEN = config["trace"]["screen"]["enabled"]
FORMATS = config["figures"]["formats"]


wildcard_constraints:
    model="|".join(re.escape(m) for m in MODELS),
    modality=wildcard_pattern(MODALITIES),
    shard=r"\d+",
    kind=wildcard_pattern(VOCAB_KINDS),


def model_spec(wildcards):
    """The model's settings as params, minus `modalities`. Adding s2t to a model must not rerun its t2t
    jobs (changed params rerun prepare_model, and with it everything downstream)."""
    return {k: v for k, v in MODELS[wildcards.model].items() if k != "modalities"}


def all_cores():
    """Threads for the model rules: every local core (Snakemake caps threads at --cores).

    Not `workflow.cores`: that raises when no --cores is given, i.e. on a cluster executor, with
    --unlock or --lint. There the profile's set-threads decides.
    """
    return workflow.resource_settings.cores or 1


def gpus(wildcards):
    """One GPU for jobs of a model on cuda, none on cpu (the slurm plugin turns it into --gpus=1)."""
    return int(SPECS[wildcards.model].cuda)


# Settings that change speed only. They are in no rule's params, so changing them reruns nothing:
# scripts read them from the config (docs/cluster.md, "What reruns when the config changes").
SPEED_ONLY = {"trace": ["max_rows"], "filter": ["batch_size"]}


def config_without_speed_settings():
    """The config as report_config shows it: everything but SPEED_ONLY (it is that rule's param)."""
    return {
        k: ({kk: vv for kk, vv in v.items() if kk not in SPEED_ONLY[k]} if k in SPEED_ONLY else v)
        for k, v in config.items()
    }


def trace_params(engine=None):
    """Everything that changes traced numbers or which prompts are traced; a change here reruns
    trace → merge → figures only. Speed-only settings (trace.max_rows) are not here: the script reads
    them from the config, so changing them reruns nothing (docs/cluster.md lists what reruns what).
    ``engine``: override trace.engine (the screen's first pass is atp whatever the exact engine)."""
    t = config["trace"]
    engine = engine or t["engine"]
    return {
        "kinds": t["kinds"],
        "window": t["window"],
        "noise": t["noise"],
        "engine": engine,
        "max_prompt_tokens": t["max_prompt_tokens"],
        "answer": t["answer"],
        **({"atp": t["atp"]} if engine == "atp" else {}),
    }


def selected_ids(wildcards, screened=SCREEN):
    """known_ids of the prompts a run traces: the package's selection (known ones, filter.expect_answer,
    capped by trace.max_prompts, in dataset order; read after the filter checkpoint). With ``screened``,
    only those the screen selected for exact tracing (read after the screen checkpoint)."""
    known = checkpoints.filter_known.get(model=wildcards.model, modality=wildcards.modality).output.table
    f = config["filter"]
    selected = select_for_trace(
        pd.read_parquet(known),
        config["trace"]["max_prompts"],
        require_known=f["require_known"],
        expect_answer=f["expect_answer"],
    )
    if screened:
        table = checkpoints.screen.get(model=wildcards.model, modality=wildcards.modality).output.table
        screen = pd.read_parquet(table, columns=["known_id", "selected"])
        selected = selected[selected["known_id"].isin(screen.loc[screen["selected"], "known_id"])]
    return selected["known_id"]


def trace_shards(wildcards, screened=SCREEN):
    """known_ids of each trace shard: fixed blocks of trace.shard_size over the selected prompts."""
    return shard_blocks(selected_ids(wildcards, screened), config["trace"]["shard_size"])


def atp_shards(wildcards):
    """known_ids of each shard of the screen's AtP pass (every selected prompt): blocks of
    trace.screen.shard_size; null, all in one job, so the model loads once for a pass of about a second
    per prompt (the job's checkpoint keeps it resumable, crosstrace.resume)."""
    ids = selected_ids(wildcards, screened=False)
    return shard_blocks(ids, config["trace"]["screen"]["shard_size"] or max(1, len(ids)))


def trace_shard_ids(wildcards):
    """The trace rule's known_ids param: a shard reruns only when its own ids change."""
    return shard_ids(trace_shards(wildcards), wildcards.shard)


def atp_shard_ids(wildcards):
    """The trace_atp rule's known_ids param: the screen's approximate pass covers every selected prompt."""
    return shard_ids(atp_shards(wildcards), wildcards.shard)


def shard_ids(shards, shard):
    i = int(shard)
    if i >= len(shards):
        raise ValueError(f"shard {i} does not exist: the selection has {len(shards)} shard(s)")
    return shards[i]


def shard_outputs(wildcards, stage=""):
    """The shard tables of a run; ``stage`` "atp/": the screen's approximate pass over every prompt."""
    shards = atp_shards(wildcards) if stage else trace_shards(wildcards)
    return expand(
        f"{R}/{{model}}/{{modality}}/{stage}shards/{{shard}}.parquet",
        model=wildcards.model,
        modality=wildcards.modality,
        shard=range(len(shards)),
    )


def s2t_shard_outputs(wildcards):
    """The S→T trace shards of a model (rule unit_view has no modality wildcard)."""
    return shard_outputs(SimpleNamespace(model=wildcards.model, modality="s2t"))


def all_targets():
    out = [f"{R}/data/quarantine.parquet"]
    if config["speech"]["enabled"]:
        out += SPEECH_TARGETS
    for m, mod in RUNS:
        out += [
            f"{R}/{m}/{mod}/aie.parquet",
            f"{R}/{m}/{mod}/summary.json",
        ]
        out += expand(f"{R}/{m}/{mod}/figures/aie_{{kind}}.{{ext}}", kind=KINDS, ext=FORMATS)
        if mod == "s2t":  # the per-unit view (workflow/rules/unit_view.smk)
            out += [f"{R}/{m}/s2t/ie_per_unit.parquet"]
            out += expand(f"{R}/{m}/s2t/figures/ie_per_unit_{{kind}}.{{ext}}", kind=KINDS, ext=FORMATS)
        if SCREEN:  # the approximate pass over every prompt, and what the screen selected
            out += [f"{R}/{m}/{mod}/screen.parquet", f"{R}/{m}/{mod}/atp/aie.parquet"]
            out += expand(f"{R}/{m}/{mod}/atp/figures/aie_{{kind}}.{{ext}}", kind=KINDS, ext=FORMATS)
    out += report_targets()  # panels, peaks, QC, comparisons (workflow/rules/report.smk)
    for m in SIMILARITY_MODELS:  # text vs speech representations (workflow/rules/similarity.smk)
        out += [f"{R}/{m}/similarity/similarity.parquet", f"{R}/{m}/similarity/similarity.html"]
        out += expand(f"{R}/{m}/similarity/similarity.{{ext}}", ext=FORMATS)
    return out


# Speech helpers (used by speech.smk)

SPEECH = config["speech"]


def speech_shards():
    """known_ids of each speech shard: fixed blocks of speech.shard_size over the records selected for
    speech (read after the speech_select checkpoint); the same mechanism as the trace shards."""
    selected = pd.read_parquet(checkpoints.speech_select.get().output.records, columns=["known_id"])
    return shard_blocks(selected["known_id"], SPEECH["shard_size"])


def speech_shard_ids():
    """Shard indices of the prompts selected for speech."""
    return range(len(speech_shards()))


def speech_shard_known_ids(wildcards):
    """The known_ids param of a speech shard job (synthesize, speech_qc, align)."""
    return shard_ids(speech_shards(), wildcards.shard)


def speech_align_shards(wildcards):
    return expand(f"{R}/speech/align/{{shard}}.parquet", shard=speech_shard_ids())


def speech_qc_shards(wildcards):
    return expand(f"{R}/speech/qc/{{shard}}.parquet", shard=speech_shard_ids())


SPEECH_TARGETS = [
    f"{R}/speech/alignment.parquet",
    f"{R}/speech/align_accuracy.parquet",
    f"{R}/speech/qc.parquet",
    f"{R}/speech/wer.json",
    f"{R}/speech/figures/wer_hist.png",
]


# S→T helpers (used by speech.smk, filter.smk, models.smk)


def units_shards(wildcards):
    return expand(
        f"{R}/{{model}}/s2t/units/{{shard}}.parquet", model=wildcards.model, shard=speech_shard_ids()
    )


def manifest_shards(wildcards):
    return expand(f"{R}/speech/manifest/{{shard}}.parquet", shard=speech_shard_ids())


def filter_inputs(wildcards):
    """T→T: the validated records. S→T also: speech selection, manifests, QC, alignment, and the model's
    speech input step (units: SpiritLM's speech units, Qwen2-Audio's audio positions)."""
    inp = {
        "records": f"{R}/data/records.parquet",
        "validation": f"{R}/data/quarantine.parquet",
        "model": f"{R}/models/{wildcards.model}.json",
    }
    if wildcards.modality == "s2t":
        inp.update(
            speech_records=f"{R}/speech/records.parquet",
            manifest=manifest_shards(wildcards),
            qc=speech_qc_shards(wildcards),
            alignment=f"{R}/speech/alignment.parquet",
            units=units_shards(wildcards),
        )
    return inp


def filter_aligner(wildcards):
    """The filter_known rule's aligner param: S→T prompts take their spans from speech.align.use; T→T has
    none, so changing the aligner reruns no T→T job."""
    return SPEECH["align"]["use"] if wildcards.modality == "s2t" else None


def filter_rows(wildcards):
    """The filter_known rule's S→T row settings (speech.token_rows, speech.pause_owner); T→T has none."""
    if wildcards.modality != "s2t":
        return None
    return {k: SPEECH[k] for k in ("token_rows", "pause_owner")}


def noise_inputs(wildcards):
    """T→T: std over the dataset's subjects; S→T: over the input embeddings at the subjects' audio positions
    (known table)."""
    records = (
        f"{R}/{wildcards.model}/s2t/known.parquet"
        if wildcards.modality == "s2t"
        else f"{R}/data/records.parquet"
    )
    return {
        "records": records,
        "validation": f"{R}/data/quarantine.parquet",
        "model": f"{R}/models/{wildcards.model}.json",
    }


# Report helpers (report.smk, similarity.smk, unit_view.smk, screen.smk): which figure files go to the
# Snakemake report, stats.compare pairs, the report's targets.

# Figures go to the Snakemake report (`snakemake --report report.html`) in one format: the first of
# png / svg / pdf that figures.formats asks for (the other formats are written all the same).
REPORT_EXT = next(e for e in ("png", "svg", "pdf") if e in FORMATS)
CAPTIONS = "../report"


def figure_outputs(pattern, caption, category, subcategory, labels=None, **expand_kw):
    """expand(pattern, ext=FORMATS, ...) with the REPORT_EXT files marked for the report."""
    out = []
    for p in expand(pattern, ext=FORMATS, **expand_kw):
        if p.endswith(f".{REPORT_EXT}"):
            lab = labels(p) if callable(labels) else labels
            p = report(
                p,
                caption=f"{CAPTIONS}/{caption}",
                category=category,
                subcategory=subcategory,
                labels=lab,
            )
        out.append(p)
    return out


def run_id(run):
    return f"{run['model']}_{run['modality']}"


# stats.compare: pair id → (a, b); check(config) made sure each side is a configured run.
PAIRS = {f"{run_id(c['a'])}_vs_{run_id(c['b'])}": (c["a"], c["b"]) for c in config["stats"]["compare"]}


def report_targets():
    """Everything the report shows; rule all asks for these (see all_targets in common.smk)."""
    out = [f"{R}/figures/aie_panels.{ext}" for ext in FORMATS]
    out += [
        f"{R}/tables/peaks.parquet",
        f"{R}/tables/peaks.html",
        f"{R}/report/config.html",
    ]
    for m, mod in RUNS:
        out += [f"{R}/{m}/{mod}/qc.html", f"{R}/{m}/{mod}/traced_prompts.html"]
        out += [f"{R}/{m}/{mod}/traced_prompts.parquet", f"{R}/{m}/{mod}/prompts"]
        out += expand(f"{R}/{m}/{mod}/figures/counts.{{ext}}", ext=FORMATS)
    for pair in PAIRS:
        out += [
            f"{R}/compare/{pair}/comparison.parquet",
            f"{R}/compare/{pair}/summary.json",
            f"{R}/compare/{pair}/summary.html",
        ]
        out += expand(f"{R}/compare/{pair}/diff.{{ext}}", ext=FORMATS)
    return out


def pair_inputs(wildcards):
    a, b = PAIRS[wildcards.pair]
    return {
        "cat_a": f"{R}/{a['model']}/{a['modality']}/category_ie.parquet",
        "cat_b": f"{R}/{b['model']}/{b['modality']}/category_ie.parquet",
        "aie_a": f"{R}/{a['model']}/{a['modality']}/aie.parquet",
        "aie_b": f"{R}/{b['model']}/{b['modality']}/aie.parquet",
    }
