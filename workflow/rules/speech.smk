# Speech side: synthesise the prompts (TTS), check them with Whisper (WER), and find the subject's time
# span in each clip (CTC forced alignment, TTS timings, Whisper timestamps). Engine: crosstrace.speech.
# Needs from common.smk: R, the `shard` wildcard constraint, `math` and `pd` imported.

SPEECH = config["speech"]


def speech_shard_ids():
    """Shard indices of the prompts selected for speech (read after the speech_select checkpoint)."""
    sel = checkpoints.speech_select.get().output.records
    n = len(pd.read_parquet(sel, columns=["known_id"]))
    return range(max(1, math.ceil(n / SPEECH["shard_size"])))


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


checkpoint speech_select:
    input:
        records=f"{R}/data/records.parquet",
    output:
        records=f"{R}/speech/records.parquet",
    params:
        max_prompts=SPEECH["max_prompts"],
    threads: 1
    log:
        "logs/speech_select/speech_select.log",
    conda:
        "../../envs/speech.yaml"
    script:
        "../../scripts/speech_select.py"


rule synthesize:
    input:
        records=f"{R}/speech/records.parquet",
    output:
        manifest=f"{R}/speech/manifest/{{shard}}.parquet",
        wavs=directory(f"{R}/speech/wav/{{shard}}"),
    params:
        shard=lambda wc: int(wc.shard),
        shard_size=SPEECH["shard_size"],
        backend=SPEECH["tts"]["backend"],
        backend_options=SPEECH["tts"]["options"],
        min_duration_s=SPEECH["tts"]["min_duration_s"],
        min_rms=SPEECH["tts"]["min_rms"],
    threads: 1
    log:
        "logs/synthesize/{shard}.log",
    conda:
        "../../envs/speech.yaml"
    script:
        "../../scripts/speech_synthesize.py"


rule speech_qc:
    input:
        records=f"{R}/speech/records.parquet",
        manifest=f"{R}/speech/manifest/{{shard}}.parquet",
    output:
        qc=f"{R}/speech/qc/{{shard}}.parquet",
    params:
        shard=lambda wc: int(wc.shard),
        shard_size=SPEECH["shard_size"],
        model=SPEECH["asr"]["model"],
        engine=SPEECH["asr"]["engine"],
        cache_dir=config.get("cache_dir"),
        device=SPEECH["asr"]["device"],
        compute_type=SPEECH["asr"]["compute_type"],
        beam_size=SPEECH["asr"]["beam_size"],
        max_wer=SPEECH["asr"]["max_wer"],
    threads: 2
    log:
        "logs/speech_qc/{shard}.log",
    conda:
        "../../envs/speech.yaml"
    script:
        "../../scripts/speech_qc.py"


rule align:
    input:
        records=f"{R}/speech/records.parquet",
        manifest=f"{R}/speech/manifest/{{shard}}.parquet",
        qc=f"{R}/speech/qc/{{shard}}.parquet",
    output:
        alignment=f"{R}/speech/align/{{shard}}.parquet",
    params:
        shard=lambda wc: int(wc.shard),
        shard_size=SPEECH["shard_size"],
        aligners=SPEECH["align"]["aligners"],
        ctc_model=SPEECH["align"]["ctc_model"],
        ctc_subject_chars=SPEECH["align"]["ctc_subject_chars"],
        device=SPEECH["align"]["device"],
    threads: 2
    log:
        "logs/align/{shard}.log",
    conda:
        "../../envs/speech.yaml"
    script:
        "../../scripts/speech_align.py"


rule align_accuracy:
    input:
        shards=speech_align_shards,
    output:
        alignment=f"{R}/speech/alignment.parquet",
        accuracy=f"{R}/speech/align_accuracy.parquet",
    params:
        reference=SPEECH["align"]["reference"],
    threads: 1
    log:
        "logs/align_accuracy/align_accuracy.log",
    conda:
        "../../envs/speech.yaml"
    script:
        "../../scripts/speech_align_accuracy.py"


rule speech_wer:
    input:
        shards=speech_qc_shards,
        records=f"{R}/speech/records.parquet",
    output:
        qc=f"{R}/speech/qc.parquet",
        summary=f"{R}/speech/wer.json",
        figure=report(
            f"{R}/speech/figures/wer_hist.png",
            caption="../report/speech_wer.rst",
            category="Speech",
        ),
    params:
        max_wer=SPEECH["asr"]["max_wer"],
    threads: 1
    log:
        "logs/speech_wer/speech_wer.log",
    conda:
        "../../envs/speech.yaml"
    script:
        "../../scripts/speech_wer.py"


rule speech:
    input:
        SPEECH_TARGETS,
    default_target: False
