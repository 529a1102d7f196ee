"""Fault injection, short: scripts/fault_injection.py with a few kills (the full run is 20; see
docs/reliability.md). Slow, so not in the default suite:  scripts/test.sh -m slow tests/test_faults.py"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_kill_9_at_random_instants_then_resume_loses_nothing(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    args = "--trials 3 --checkpoint-kills 1 --max-steps 6 --seed 1".split()
    args += ["--out", str(tmp_path / "runs"), "--summary", str(summary)]
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "fault_injection.py"), *args],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(summary.read_text())
    assert result["trials"] == result["succeeded_and_exact"] == 4  # 3 random instants + 1 mid-checkpoint
    assert result["kills"] == 4 and not result["failures"]
