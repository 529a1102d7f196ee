"""The run's reaper: kills the process groups of the run's environment workers when the trainer dies.

Each worker runs in its own session, so killing its process group also kills whatever environment
code started (a tool's `sleep`, a shell, a server). The trainer kills a worker's group itself when it
replaces or closes the worker; when the trainer is killed (SIGKILL, the OOM killer) nothing in it
runs, and a worker's children would live on with PPID 1. So one reaper per trainer holds the groups
that are alive and kills them all when its stdin, a pipe only the trainer writes, reaches its end,
which the kernel makes happen as the trainer dies. It runs no environment code, so nothing can keep it
from running: standard library only, started by path, in its own session (a Ctrl-C or a kill of the
trainer's process group does not take it down first).

Protocol on stdin, one line each: `+PGID` (a worker's group started), `-PGID` (the trainer killed it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: set[int] = set()
    for line in sys.stdin:  # ends when the trainer closes the pipe or dies
        sign, pgid = line[:1], line[1:].strip()
        if pgid.isdigit():
            (groups.add if sign == "+" else groups.discard)(int(pgid))
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    main()
