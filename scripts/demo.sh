#!/usr/bin/env bash
# Install (if needed) and run the demo: the tiny built-in model learns to answer in digits.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/python -m rltrain --config configs/demo.toml "$@"
