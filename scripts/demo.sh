#!/usr/bin/env bash
# Install (if needed) and run a demo:
#   scripts/demo.sh            the tiny built-in model learns to answer in digits (~1 min)
#   scripts/demo.sh smollm2    SmolLM2-135M-Instruct, a real pretrained model, learns to answer in
#                              capital letters (~5 min on 2 cores; converted from PyPI's GGUF on first use)
# Extra arguments are config overrides, e.g. --max_steps 5.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
CONFIG=configs/demo.toml
if [ "${1:-}" = smollm2 ]; then
  CONFIG=configs/smollm2.toml
  export OMP_NUM_THREADS=${RLTRAIN_THREADS:-2}  # a real model: every core helps
  shift
fi
exec .venv/bin/python -m rltrain --config "$CONFIG" "$@"
