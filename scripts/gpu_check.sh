#!/usr/bin/env bash
# The one device check, for a lent GPU machine as it is: the system python3 with PyTorch, transformers,
# peft and accelerate, no vLLM, no internet. Never installs from a registry; never a fake pass.
#
#   scripts/gpu_check.sh                # preflight, the gpu tests, bench_gpu.py in a time budget
#   OUT=dir BENCH_BUDGET_S=300 scripts/gpu_check.sh
#   KEEP_GOING=1 PYTHON=/some/venv/bin/python scripts/gpu_check.sh   # past a failed preflight (CPU trial)
#
# Python packages the image lacks (pydantic, jsonschema) travel as wheels in .whl/ (scripts/gpu_wheels.sh
# fetches them here); they are unpacked into a private site dir, never into the image's python.
# Every step is bounded by a timeout and writes its log (and JSON) under $OUT. Exit status: 0 only when
# CUDA is visible, every gpu test ran and passed, and the benchmark ran without an error row.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 RLTRAIN_CACHE=${RLTRAIN_CACHE:-/tmp/rltrain-cache}
status=0
step() { echo; echo "== $1 ($(date -u +%H:%M:%S))"; }

step "wheels"
if compgen -G ".whl/*.whl" >/dev/null; then
  SITE=/tmp/rltrain-site
  mkdir -p "$SITE"
  for w in .whl/*.whl; do "$PY" -m zipfile -e "$w" "$SITE" || status=1; done
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  echo "unpacked $(ls .whl/*.whl | wc -l) wheels into $SITE"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  echo "no .whl/ here: using the image's packages only"
fi

step "preflight"
timeout 120 "$PY" scripts/gpu_preflight.py --out "$OUT/preflight.json" 2>&1 | tee "$OUT/preflight.log"
pre=${PIPESTATUS[0]}
if [ "$pre" -ne 0 ]; then
  status=1
  if [ -z "${KEEP_GOING:-}" ]; then  # KEEP_GOING=1: run the rest anyway (to try the script on CPU)
    echo "gpu_check: preflight failed (exit $pre): see $OUT/preflight.log; nothing else was run"
    exit "$pre"
  fi
fi

step "gpu tests"
# -p no:cacheprovider: the tree may be read-only; the rootdir's pyproject adds `-m 'not gpu'`, so ask for gpu
timeout "${TEST_TIMEOUT_S:-300}" "$PY" -m pytest -p no:cacheprovider -q -rs -m gpu tests/test_gpu.py \
  --junitxml="$OUT/gpu-tests.xml" 2>&1 | tee "$OUT/gpu-tests.log"
rc=${PIPESTATUS[0]}
if ! "$PY" scripts/gpu_preflight.py --junit "$OUT/gpu-tests.xml"; then
  rc=1  # all skipped, or none collected, is a failure here: it would look green and prove nothing
fi
[ "$rc" -eq 0 ] || status=1

step "bench_gpu.py"
budget=${BENCH_BUDGET_S:-420}
timeout $((budget + 60)) "$PY" scripts/bench_gpu.py --budget-s "$budget" --out "$OUT/bench_gpu.json" 2>&1 \
  | tee "$OUT/bench_gpu.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "done"
echo "gpu_check: $([ $status -eq 0 ] && echo PASSED || echo FAILED) — logs and JSON in $OUT"
exit $status
