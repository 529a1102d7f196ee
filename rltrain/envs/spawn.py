"""Starting environment worker processes so that none outlives the run (envs/workers.py runs them).

- Each worker leads its own session: killing its process group (`kill_group`) kills whatever
  environment code started too (a tool's subprocess, a shell).
- Workers ask the kernel for SIGKILL when their parent ends (PR_SET_PDEATHSIG, in workers.serve). The
  kernel's "parent" is the thread that started the process, and the threads that call into a pool
  come and go, so every worker is started from one spawner thread that lives as long as the trainer.
- When the trainer is killed, the run's reaper (envs/reaper.py, started here on first use) kills
  every worker group still alive.

Standard library only: the foreign worker (envs/foreign_worker.py) imports envs/workers.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REAPER = Path(__file__).with_name("reaper.py")
# PR_SET_PDEATHSIG fires when the thread that started a process ends: this one lives with the trainer
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-spawn")
_reaper: subprocess.Popen[bytes] | None = None
_reaper_lock = threading.Lock()


def spawn(argv: list[str], fds: tuple[int, ...], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A worker in its own session (its process group: it and whatever it starts), told to the reaper."""

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, pass_fds=fds, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        _tell_reaper(f"+{proc.pid}")
        return proc

    return _SPAWNER.submit(start).result()


def _tell_reaper(line: str) -> None:
    """Starts the run's reaper with the first worker (on the spawner thread, like the workers)."""
    global _reaper
    with _reaper_lock:
        if line.startswith("-") and _reaper is None:
            return
        if _reaper is None or _reaper.poll() is not None:
            _reaper = subprocess.Popen(
                [sys.executable, str(REAPER)], stdin=subprocess.PIPE, start_new_session=True
            )
        try:
            assert _reaper.stdin is not None
            _reaper.stdin.write(f"{line}\n".encode())
            _reaper.stdin.flush()
        except (BrokenPipeError, OSError):  # the reaper is gone: the next line starts another
            pass


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL to a worker's process group, while its leader is unreaped (so the id is still its)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        _tell_reaper(f"-{proc.pid}")
