"""Speech side: TTS, QC, alignment and speech units (one module per stage)."""
