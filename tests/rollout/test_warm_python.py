"""The warm Python that stands in for the interpreter of verifiers' harness programs: a program run
through it sees and does what it would under `python script.py`, dies with its launcher's process
group, and runs cold when the zygote is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rltrain.rollout.warm_python import WarmPython

PROGRAM = """
import json, os, subprocess, sys
if len(sys.argv) > 1 and sys.argv[1] == "sleep":
    child = subprocess.Popen(["sleep", "60"])
    print(os.getpid(), child.pid, flush=True)
    child.wait()
data = sys.stdin.read()
seen = {"argv": sys.argv, "cwd": os.getcwd(), "x": os.environ.get("X"), "stdin": data, "name": __name__,
        "path0": sys.path[0], "venv": os.environ.get("VIRTUAL_ENV"), "path": os.environ["PATH"].split(":")[0]}
print(json.dumps(seen))
print("to stderr", file=sys.stderr)
sys.exit(int(os.environ.get("CODE", "0")))
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("warm") / "prog.py"
    path.write_text(PROGRAM)
    return path


@pytest.fixture(scope="module")
def warm(program: Path) -> Iterator[WarmPython]:
    w = WarmPython([str(program)])
    yield w
    w.close()


def _run(interpreter: str, program: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [interpreter, str(program), "a", "b c"], input="in", capture_output=True, text=True, env=env, cwd="/"
    )


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_a_program_sees_what_a_fresh_interpreter_gives_it(warm: WarmPython, program: Path) -> None:
    env = dict(os.environ, X="x", CODE="3")
    cold, hot = _run(sys.executable, program, env), _run(warm.interpreter, program, env)
    assert (hot.returncode, hot.stderr) == (cold.returncode, cold.stderr) == (3, "to stderr\n")
    assert json.loads(hot.stdout) == json.loads(cold.stdout)
    assert json.loads(hot.stdout)["argv"] == [str(program), "a", "b c"]
    # verifiers derives VIRTUAL_ENV and PATH from the interpreter's folder: the program gets the real one's
    venv = {**env, "VIRTUAL_ENV": warm.home, "PATH": f"{warm.home}/bin:/usr/bin"}
    seen = json.loads(_run(warm.interpreter, program, venv).stdout)
    real = str(Path(sys.executable).parent.parent)
    assert (seen["venv"], seen["path"]) == (real, f"{real}/bin")


def test_killing_the_launchers_group_ends_the_program_and_its_child(warm: WarmPython, program: Path) -> None:
    proc = subprocess.Popen(
        [warm.interpreter, str(program), "sleep"], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert proc.stdout is not None
    pid, child = map(int, proc.stdout.readline().split())
    assert pid != proc.pid and _alive(pid) and _alive(child)  # a fork of the zygote, not the launcher
    os.killpg(proc.pid, signal.SIGKILL)  # what verifiers does to a program it gives up on
    proc.wait()
    deadline = time.monotonic() + 10
    while (_alive(pid) or _alive(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid) and not _alive(child)


def test_without_the_zygote_the_launcher_runs_a_plain_interpreter(program: Path) -> None:
    w = WarmPython([str(program)])
    w.proc.kill()
    w.proc.wait()
    try:
        out = _run(w.interpreter, program, dict(os.environ, CODE="5"))
        assert out.returncode == 5 and json.loads(out.stdout)["stdin"] == "in"
    finally:
        w.close()
    assert not Path(w.home).exists()
