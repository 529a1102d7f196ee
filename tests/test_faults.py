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


def _inject(tmp_path: Path, args: list[str]) -> dict:
    summary = tmp_path / "summary.json"
    args += ["--out", str(tmp_path / "runs"), "--summary", str(summary)]
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "fault_injection.py"), *args],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(summary.read_text())  # type: ignore[no-any-return]


@pytest.mark.slow
def test_kill_9_at_random_instants_then_resume_loses_nothing(tmp_path: Path) -> None:
    result = _inject(tmp_path, "--trials 3 --checkpoint-kills 1 --max-steps 6 --seed 1".split())
    assert result["trials"] == result["succeeded_and_exact"] == 4  # 3 random instants + 1 mid-checkpoint
    assert result["kills"] == 4 and not result["failures"]


@pytest.mark.slow
def test_kill_9_and_ctrl_c_with_the_producer_running(tmp_path: Path) -> None:
    """Sampling ahead: killed or stopped, then resumed, each run equals the reference value for value."""
    args = "--max-async-level 1 --trials 2 --checkpoint-kills 1 --interrupts 2 --max-steps 6 --seed 2"
    result = _inject(tmp_path, args.split())
    assert result["trials"] == result["succeeded_and_exact"] == 5 and not result["failures"]
    assert result["setup"]["max_async_level"] == 1


@pytest.mark.slow
def test_a_hostile_multi_turn_environment_killed_mid_episode_leaves_no_process(tmp_path: Path) -> None:
    """scripts/hostile_env.py: turns that hang, flood, raise, fork `sleep` children, nest tool-call
    markup or send unrenderable content; SIGKILL at random instants (mostly mid-episode) and Ctrl-C.
    Each trial ends succeeded with a valid record, and no worker or child of any run survives it."""
    args = "--multi-turn --trials 2 --checkpoint-kills 1 --interrupts 1 --max-steps 4 --seed 1"
    result = _inject(tmp_path, args.split())
    assert result["trials"] == result["succeeded_and_exact"] == 4 and not result["failures"]
    pids = [p.name.split("-")[0] for p in (tmp_path / "runs" / "pids").iterdir()]
    assert "child" in pids and "worker" in pids  # the faults ran: children were started, and are gone
