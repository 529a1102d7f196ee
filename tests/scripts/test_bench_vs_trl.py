"""scripts/bench_vs_trl.py: the rltrain half end to end (2 steps), the JSON shape, and the no-TRL exit."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench_vs_trl.py"


def test_rltrain_half_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["--cases", "tiny", "--only", "rltrain", "--threads", "1", "--steps", "2", "--rounds", "1"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--out", str(out)], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rltrain@1" in proc.stdout and str(out) in proc.stdout
    result = json.loads(out.read_text())["tiny"]
    assert result["settings"]["steps"] == 2 and result["settings"]["warmup_steps_excluded"] == 1
    assert set(result["engines"]) == {"rltrain@1"}
    assert result["ratios"] == {}  # no TRL run: nothing to compare with
    s = result["engines"]["rltrain@1"]
    assert s["median_step_s"] > 0 and s["median_cycle_cpu_s"] > 0 and s["completion_tok_s"] > 0
    assert s["peak_rss_mib"] > 50 and s["median_train_s"] > 0 and s["median_pad_frac"] == 0.0  # packed
    assert len(s["reward_curve"]) == 2 and all(0.0 <= r <= 1.0 for r in s["reward_curve"])
    (run,) = s["runs"]
    assert len(run["step_s"]) == len(run["reward"]) == len(run["completion_tokens"]) == 2
    assert len(run["cycle_s"]) == len(run["cycle_cpu_s"]) == 1  # gaps between consecutive steps


@pytest.mark.skipif(importlib.util.find_spec("trl") is not None, reason="TRL is installed here")
def test_without_trl_it_says_how_to_install_and_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--cases", "tiny", "--steps", "2", "--out", str(tmp_path / "x.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and ".[bench]" in lines[0]
    assert not (tmp_path / "x.json").exists()
