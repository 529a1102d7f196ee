"""scripts/bench_vs_trl.py: the rltrain half end to end (2 steps), the JSON shape, thresholds and ratios on
hand-made runs, and the no-TRL exit."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench_vs_trl.py"


def _module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_vs_trl", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_vs_trl"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_rltrain_half_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["--cases", "tiny", "--only", "rltrain", "--threads", "1", "--steps", "tiny=2", "--seeds", "1"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--out", str(out)], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rltrain@1" in proc.stdout and str(out) in proc.stdout
    result = json.loads(out.read_text())["tiny"]
    assert result["settings"]["steps"] == 2 and result["settings"]["warmup_steps_excluded"] == 1
    assert set(result["engines"]) == {"rltrain@1"}
    assert result["step_ratios"] == {} and result["time_to_reward_ratios"] == {}  # no TRL run
    s = result["engines"]["rltrain@1"]
    assert s["median_step_s"] > 0 and s["median_cycle_cpu_s"] > 0 and s["completion_tok_s"] > 0
    assert s["peak_rss_mib"] > 50 and s["median_train_s"] > 0
    (run,) = s["runs"]
    assert len(run["step_s"]) == len(run["reward"]) == len(run["end_s"]) == 2
    assert run["end_s"][0] < run["end_s"][1] and len(run["cycle_s"]) == 1  # gaps between consecutive steps
    assert run["settled"]["max_async_level"] == 0  # the default settles to serial on CPU
    assert set(run["to_threshold"]) == {"0.5", "0.5 mean3", "0.9", "0.9 mean3"}


def test_thresholds_and_ratios_on_hand_made_runs() -> None:
    bench = _module()
    ours = {"reward": [0.2, 0.6, 0.4, 0.95, 0.9, 0.92], "end_s": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}
    assert bench.to_threshold(ours, 0.5, 1) == {"step": 2, "wall_s": 2.0}
    assert bench.to_threshold(ours, 0.5, 3) == {"step": 4, "wall_s": 4.0}  # (0.6 + 0.4 + 0.95) / 3 = 0.65
    assert bench.to_threshold(ours, 0.9, 3) == {"step": 6, "wall_s": 6.0}  # 0.9233
    assert bench.to_threshold(ours, 0.99, 1) is None
    trl = {"reward": [0.1, 0.2, 0.3, 0.55, 0.6], "end_s": [5.0, 10.0, 15.0, 20.0, 25.0]}
    runs = [
        {**r, "to_threshold": {k: bench.to_threshold(r, t, 1) for k, t in (("0.5", 0.5), ("0.9", 0.9))}}
        for r in (trl, ours)
    ]
    ratios = bench.ttr_ratios({"runs": [runs[0]]}, {"runs": [runs[1]]})
    assert ratios["0.5"] == [{"bound": "=", "wall": 10.0, "steps": 2.0}]  # step 4 at 20 s vs step 2 at 2 s
    assert ratios["0.9"] == [{"bound": ">", "wall": 25.0 / 4.0, "steps": 5 / 4}]  # TRL never: a lower bound
    assert bench.reached([0.2, 0.95, 0.9, 0.92]) and not bench.reached([0.95, 0.9])


@pytest.mark.skipif(importlib.util.find_spec("trl") is not None, reason="TRL is installed here")
def test_without_trl_it_says_how_to_install_and_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--cases",
            "tiny",
            "--steps",
            "tiny=2",
            "--out",
            str(tmp_path / "x.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and ".[bench,smollm2]" in lines[0]
    assert not (tmp_path / "x.json").exists()
