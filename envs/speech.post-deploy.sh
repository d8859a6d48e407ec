#!/usr/bin/env bash
# Run by Snakemake inside the new envs/speech.yaml environment. openai-whisper is used only for its English
# text normaliser (WER); --no-deps skips triton (CUDA only, ~1 GB). Its other dependencies are in speech.yaml.
set -euo pipefail
python -m pip install --no-deps openai-whisper==20250625
