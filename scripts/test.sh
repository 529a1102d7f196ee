#!/usr/bin/env bash
# Install (if needed) and run the default test suite. Extra arguments go to pytest.
#   scripts/test.sh -m slow   # the slow suites (fault injection, benchmarks)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# the code standard is part of the suite: lint and types first (seconds), then the tests
.venv/bin/ruff check rltrain environments scripts tests
.venv/bin/mypy rltrain
exec .venv/bin/python -m pytest -q "$@"
