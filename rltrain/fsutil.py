"""The two file-system tools every writer shares: an atomic path (built beside its place, renamed into
it) and a non-blocking flock.

One helper for files and directories alike (run.json, config.json, metrics rewrites, curves.png,
checkpoints, the tiny model): a reader, or a kill at any instant, sees the old version or the new one,
never half of either. Imports nothing heavy: `runs`, `submit` and the worker use it.

flock, not the filelock package: a run's `.lock` holds its writer's pid (for `runs cancel`) and is probed
with a shared lock by readers, neither of which filelock offers; the kernel drops a flock when its
holder dies, so no lock can go stale.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_path(final: Path, *, directory: bool = False, replace: bool = True) -> Iterator[Path]:
    """A temp file (or directory) beside `final`, named `.<name>.*`, to write; renamed onto `final` when
    the block ends without an error, removed otherwise.

    A directory replaces an existing `final` only with `replace`; without it, a `final` that another
    writer published first is kept (both built the same thing) and ours is dropped."""
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{final.name}."
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=final.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory and replace and final.is_dir():
            shutil.rmtree(final)
        try:
            os.replace(tmp, final)
        except OSError:  # a non-empty directory is there: another writer's
            if replace or not final.is_dir():
                raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    """`text` into `path` atomically. `durable` also fsyncs, which only power loss needs and which costs
    ~4 ms on this disk: per-step updates skip it."""
    with atomic_path(path) as tmp, tmp.open("w") as f:
        f.write(text)
        f.flush()
        if durable:
            os.fsync(f.fileno())


def try_flock(handle: IO[str], shared: bool = False) -> bool:
    """Take a flock on an open file without waiting; False when another process holds it."""
    try:
        fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def unlock(handle: IO[str]) -> None:
    fcntl.flock(handle, fcntl.LOCK_UN)
