# Speech side: synthesise the prompts (TTS), check them with Whisper (WER), find the subject's time span in
# each clip (CTC forced alignment, TTS timings, Whisper timestamps), and run each speech model's input step
# on the clips (SpiritLM's speech units; Qwen2-Audio's audio positions). Engine: crosstrace.speech.
# Its helper functions (SPEECH, speech_shard_ids, ...) live in common.smk (snakemake --lint: no functions
# among rules). Shard jobs read the validated records and get their known_ids as a param (a fixed block of
# the speech selection), so raising speech.max_prompts adds shards and leaves finished ones alone.


checkpoint speech_select:
    input:
        records=f"{R}/data/records.parquet",
        validation=f"{R}/data/quarantine.parquet",
    output:
        records=f"{R}/speech/records.parquet",
    log:
        f"{LOGS}/speech_select/speech_select.log",
    conda:
        "../../envs/speech.yaml"
    threads: 1
    params:
        max_prompts=SPEECH["max_prompts"],
    script:
        "../../scripts/speech_select.py"


# The prompts' audio: synthesised (speech.source: tts) or the user's own recordings (speech.source:
# recordings). Both write the same manifest table and 16 kHz mono WAVs.
if SPEECH["source"] == "tts":

    rule synthesize:
        input:
            records=f"{R}/data/records.parquet",
        output:
            manifest=f"{R}/speech/manifest/{{shard}}.parquet",
            wavs=directory(f"{R}/speech/wav/{{shard}}"),
        log:
            f"{LOGS}/synthesize/{{shard}}.log",
        conda:
            "../../envs/speech.yaml"
        threads: 1
        params:
            known_ids=speech_shard_known_ids,
            backend=SPEECH["tts"]["backend"],
            backend_options=SPEECH["tts"]["options"],
            min_duration_s=SPEECH["tts"]["min_duration_s"],
            min_rms=SPEECH["tts"]["min_rms"],
        script:
            "../../scripts/speech_synthesize.py"

else:

    rule load_recordings:
        input:
            records=f"{R}/data/records.parquet",
            manifest=workflow_path(SPEECH["recordings"]["manifest"]),
        output:
            manifest=f"{R}/speech/manifest/{{shard}}.parquet",
            wavs=directory(f"{R}/speech/wav/{{shard}}"),
        log:
            f"{LOGS}/load_recordings/{{shard}}.log",
        conda:
            "../../envs/speech.yaml"
        threads: 1
        params:
            known_ids=speech_shard_known_ids,
            max_wer=SPEECH["asr"]["max_wer"],
            min_rms=SPEECH["recordings"]["min_rms"],
            max_chars_per_s=SPEECH["recordings"]["max_chars_per_s"],
        script:
            "../../scripts/speech_recordings.py"


rule speech_qc:
    input:
        records=f"{R}/data/records.parquet",
        manifest=f"{R}/speech/manifest/{{shard}}.parquet",
    output:
        qc=f"{R}/speech/qc/{{shard}}.parquet",
    log:
        f"{LOGS}/speech_qc/{{shard}}.log",
    conda:
        "../../envs/speech.yaml"
    threads: 2
    resources:
        gpu=int(SPEECH["asr"]["device"].startswith("cuda")),
    params:
        known_ids=speech_shard_known_ids,
        model=SPEECH["asr"]["model"],
        engine=SPEECH["asr"]["engine"],
        cache_dir=config.get("cache_dir"),
        device=SPEECH["asr"]["device"],
        compute_type=SPEECH["asr"]["compute_type"],
        beam_size=SPEECH["asr"]["beam_size"],
        max_wer=SPEECH["asr"]["max_wer"],
    script:
        "../../scripts/speech_qc.py"


rule align:
    input:
        records=f"{R}/data/records.parquet",
        manifest=f"{R}/speech/manifest/{{shard}}.parquet",
        qc=f"{R}/speech/qc/{{shard}}.parquet",
    output:
        alignment=f"{R}/speech/align/{{shard}}.parquet",
    log:
        f"{LOGS}/align/{{shard}}.log",
    conda:
        "../../envs/speech.yaml"
    threads: 2
    resources:
        gpu=int(SPEECH["align"]["device"].startswith("cuda")),
    params:
        known_ids=speech_shard_known_ids,
        aligners=SPEECH["align"]["aligners"],
        ctc_model=SPEECH["align"]["ctc_model"],
        ctc_subject_chars=SPEECH["align"]["ctc_subject_chars"],
        device=SPEECH["align"]["device"],
    script:
        "../../scripts/speech_align.py"


rule align_accuracy:
    input:
        shards=speech_align_shards,
    output:
        alignment=f"{R}/speech/alignment.parquet",
        accuracy=f"{R}/speech/align_accuracy.parquet",
    log:
        f"{LOGS}/align_accuracy/align_accuracy.log",
    conda:
        "../../envs/speech.yaml"
    threads: 1
    params:
        reference=SPEECH["align"]["reference"],
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
    log:
        f"{LOGS}/speech_wer/speech_wer.log",
    conda:
        "../../envs/speech.yaml"
    threads: 1
    params:
        max_wer=SPEECH["asr"]["max_wer"],
        source=SPEECH["source"],
    script:
        "../../scripts/speech_wer.py"


rule speech:
    default_target: False
    input:
        SPEECH_TARGETS,


# Speech → text: each speech family's input step per model, read by the modality-aware rules filter_known and
# noise_std. SpiritLM: WAVs → speech units (HuBERT 25 Hz + quantizer, deduplicated); Qwen2-Audio: the count
# of audio positions of each clip (processor and the encoder's length rule, no model run).
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
