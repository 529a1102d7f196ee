"""Every way a run ends closes what it started: the environment workers and what they started, the
engine, the endpoint; and the CLI exits within seconds (a failed step, Ctrl-C twice, SIGTERM), even
while environment code hangs in a producer's episode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import tomli_w

import rltrain.run
from rltrain.config import parse_config
from rltrain.run import train
from tests.envs.test_workers import _alive, _gone_within
from tests.helpers import valid_record

REPO = Path(__file__).resolve().parents[1]
# env_response records its worker's pid; once the `hang` file exists it starts a child and hangs
HANGS = """
import os, pathlib, subprocess, time
import rltrain

HERE = pathlib.Path({here!r})

def respond(messages, state):
    (HERE / f"worker-{{os.getpid()}}").touch()
    if (HERE / "hang").exists():
        child = subprocess.Popen(["sleep", "780"])
        (HERE / f"child-{{child.pid}}").touch()
        (HERE / "hung").touch()
        time.sleep(300)
    return [{{"role": "user", "content": "again"}}]

def load_environment():
    rows = [{{"question": f"say {{i}}"}} for i in range(8)]
    return rltrain.Environment(rows, [lambda completion: 1.0], env_response=respond, max_turns=2)
"""
# the CLI with train_step raising once the environment hangs (the `fail` file asks for it)
SHIM = """
import pathlib, sys, time
import rltrain.run

HERE, real = pathlib.Path(sys.argv[1]), rltrain.run.train_step

def failing(*args, **kwargs):
    if (HERE / "fail").exists():
        (HERE / "hang").touch()
        while not (HERE / "hung").exists():
            time.sleep(0.05)
        (HERE / "crashed").write_text(str(time.time()))
        raise RuntimeError("the step crashed")
    return real(*args, **kwargs)

rltrain.run.train_step = failing
from rltrain.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def _pids(here: Path, kind: str) -> list[int]:
    return [int(p.name.split("-")[1]) for p in here.glob(f"{kind}-*")]


def _config(run_config: Any, here: Path, **overrides: Any) -> dict[str, Any]:
    env = here / "hangs_env.py"
    env.write_text(HANGS.format(here=str(here)))
    scoring = {"turn_timeout_s": 120, "episode_timeout_s": 300, "workers": 2}
    return run_config(  # type: ignore[no-any-return]
        env=[{"id": str(env)}], batch_size=4, rollouts_per_example=2, scoring=scoring, **overrides
    )


def test_a_failed_step_closes_the_workers_and_the_engine(
    run_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the step crashed")

    monkeypatch.setattr(rltrain.run, "train_step", crash)
    cfg = _config(run_config, tmp_path, run__id="crash", max_steps=2)
    with pytest.raises(RuntimeError, match="the step crashed"):
        train(parse_config(cfg))
    assert valid_record(tmp_path / "runs" / "crash")["status"] == "failed"
    workers = _pids(tmp_path, "worker")
    assert workers and _gone_within(workers, 5.0) is not None  # closed, not left for the exit
    busy = ("env", "reward", "generate", "scoring")
    deadline = time.monotonic() + 5
    while any(t.name.startswith(busy) for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith(busy)]


def _launch(run_config: Any, here: Path, async_level: int) -> subprocess.Popen[bytes]:
    cfg = _config(run_config, here, max_steps=3, max_async_level=async_level, run__id="run")
    (here / "c.toml").write_text(tomli_w.dumps(cfg))
    return subprocess.Popen(
        [sys.executable, "-c", SHIM, str(here), "--config", str(here / "c.toml")],
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for(path: Path, proc: subprocess.Popen[bytes], within: float = 240) -> None:
    deadline = time.monotonic() + within
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, f"no {path.name} (rc {proc.poll()})"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["failure", "ctrl-c twice", "sigterm"])
def test_the_cli_exits_within_seconds_and_leaves_nothing(run_config: Any, tmp_path: Path, how: str) -> None:
    """failure: a step crashes while the producer's episode hangs in env_response; Ctrl-C twice: while
    the step's own episode hangs; SIGTERM: once, between steps (stops after the step)."""
    proc = _launch(run_config, tmp_path, async_level=1 if how == "failure" else 0)
    try:
        if how == "failure":
            (tmp_path / "fail").touch()
            _wait_for(tmp_path / "crashed", proc)
            start = float((tmp_path / "crashed").read_text())
        elif how == "ctrl-c twice":
            _wait_for(tmp_path / "runs" / "run" / "metrics.jsonl", proc)
            (tmp_path / "hang").touch()
            _wait_for(tmp_path / "hung", proc)
            start = time.time()
            proc.send_signal(signal.SIGINT)
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
        else:
            _wait_for(tmp_path / "runs" / "run" / "metrics.jsonl", proc)
            start = time.time()
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        took = time.time() - start
    finally:
        proc.kill()
    status = json.loads((tmp_path / "runs" / "run" / "run.json").read_text())["status"]
    assert status == ("failed" if how == "failure" else "cancelled")
    left = [p for p in _pids(tmp_path, "worker") + _pids(tmp_path, "child") if _alive(p)]
    assert not left and took < 15.0, f"{how}: exited after {took:.1f}s, still alive: {left}"
    print(f"{how}: exit {took:.1f}s after the fault, rc {proc.returncode}")
