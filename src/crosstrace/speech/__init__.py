"""Speech side of crosstrace: TTS, Whisper QC, CTC text normalisation and forced alignment.

Modules: :mod:`.tts` (synthesis backends, 16 kHz WAV), :mod:`.asr` (Whisper transcripts, WER),
:mod:`.normalize` (spoken words for a CTC alphabet), :mod:`.align` (CTC Viterbi, TTS and Whisper
aligners, paper eq. 1, boundary accuracy), :mod:`.pipeline` (per-record steps with quarantine).
Heavy dependencies (piper, faster-whisper, transformers) are imported only when used.
"""
