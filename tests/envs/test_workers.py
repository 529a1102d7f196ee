"""No environment process outlives its run: a worker's children die with it, a worker that exits is seen
at once even when its children live on, and a SIGKILLed trainer takes its workers and their children
with it, even while environment code holds the worker's GIL (the trainer's interpreter and another
one alike)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rltrain.envs.base import Row
from rltrain.envs.workers import CallFailed, EnvSpec, WorkerPool

ROOT = Path(__file__).resolve().parents[2]
ENV = """
import os, re, subprocess, time
import rltrain

PIDS = {pids!r}

def _started(child):
    with open(PIDS + ".tmp", "w") as f:
        f.write(f"{{os.getpid()}} {{child}}")
    os.replace(PIDS + ".tmp", PIDS)

def hangs(completion: str) -> float:
    _started(subprocess.Popen(["sleep", "777"]).pid)
    time.sleep(600)
    return 0.0

def exits(completion: str) -> float:
    os.system("sleep 778 & echo $! > " + PIDS + ".child")  # a shell's child: inherits what it can
    _started(int(open(PIDS + ".child").read()))
    os._exit(3)

def regex(completion: str) -> float:
    _started(subprocess.Popen(["sleep", "779"]).pid)
    re.match(r"(x+x+)+y", "x" * 64)  # catastrophic backtracking: one C call that holds the GIL
    return 0.0

def load_environment():
    return rltrain.Environment([{{"question": "q"}}], [hangs, exits, regex])
"""
DRIVER = """
import sys
from rltrain.envs.base import Row
from rltrain.envs.workers import EnvSpec, WorkerPool

pool = WorkerPool([EnvSpec("e", sys.argv[1], {})], size=1, python=sys.argv[2] or None)
pool.call("e", "call", 2, Row([{"role": "user", "content": "q"}]), ["x"], timeout_s=600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, waiting to be reaped
    except (FileNotFoundError, ProcessLookupError):
        return False


def _gone_within(pids: list[int], seconds: float) -> float | None:
    """Seconds until every pid is dead (None: some still alive after `seconds`)."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if not any(_alive(p) for p in pids):
            return time.monotonic() - start
        time.sleep(0.02)
    return None


def _pids(path: Path, within: float = 60.0) -> list[int]:
    deadline = time.monotonic() + within
    while not path.exists():
        assert time.monotonic() < deadline, "the environment code never started"
        time.sleep(0.02)
    return [int(p) for p in path.read_text().split()]


@pytest.fixture
def env(tmp_path: Path) -> tuple[str, Path]:
    pids = tmp_path / "pids"
    path = tmp_path / "spawning_env.py"
    path.write_text(ENV.format(pids=str(pids)))
    return str(path), pids


@pytest.fixture
def pool(env: tuple[str, Path]) -> Iterator[WorkerPool]:
    made = WorkerPool([EnvSpec("e", env[0], {})], size=1)
    yield made
    made.close()


ROW = Row([{"role": "user", "content": "q"}])


def test_a_hung_calls_children_die_with_its_worker(env: tuple[str, Path], pool: WorkerPool) -> None:
    with pytest.raises(CallFailed, match="timeout"):
        pool.call("e", "call", 0, ROW, ["x"], timeout_s=3)
    worker, child = _pids(env[1])
    pool.close()
    assert _gone_within([worker, child], 5.0) is not None


def test_a_worker_that_exits_is_seen_at_once_and_its_children_go(
    env: tuple[str, Path], pool: WorkerPool
) -> None:
    """Its shell child inherits what the worker lets it: not the pipe to the trainer."""
    start = time.monotonic()
    with pytest.raises(CallFailed, match="crash"):
        pool.call("e", "call", 1, ROW, ["x"], timeout_s=30)
    assert time.monotonic() - start < 20  # the worker's exit, not the call's timeout
    worker, child = _pids(env[1])
    assert _gone_within([worker, child], 5.0) is not None


@pytest.mark.parametrize("interpreter", ["trainer", "foreign"])
def test_a_killed_trainer_takes_its_workers_and_their_children(
    env: tuple[str, Path], interpreter: str, request: pytest.FixtureRequest
) -> None:
    python = request.getfixturevalue("bare_python") if interpreter == "foreign" else ""
    trainer = subprocess.Popen(
        [sys.executable, "-c", DRIVER, env[0], python],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
    )
    try:
        worker, child = _pids(env[1])
        time.sleep(0.3)  # inside the regex by now
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        took = _gone_within([worker, child], 10.0)
        assert took is not None and took < 5.0, f"still alive: {[p for p in (worker, child) if _alive(p)]}"
    finally:
        trainer.kill()
        for pid in _pids(env[1]):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
