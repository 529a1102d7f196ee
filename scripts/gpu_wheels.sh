#!/usr/bin/env bash
# Fetch, on a machine with PyPI, the wheels the device image lacks into .whl/ (git-ignored), for
# scripts/gpu_check.sh to unpack there. The image's python3 is 3.12 on x86-64 (KINDS.md of the device tool).
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${PYV:-3.12}
rm -rf .whl && mkdir -p .whl
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# dependencies resolved for the target interpreter, so pydantic-core matches pydantic's pin
python3 -m pip download -q --only-binary=:all: --python-version "$PYV" --implementation cp "${PLAT[@]}" \
  -d .whl "pydantic==2.14.4" "jsonschema>=4.20"
ls -1 .whl
