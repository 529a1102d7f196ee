"""What the server reads of a runs directory: records, metrics rows, rollouts, checkpoints, logs.

Everything is read from the files a run writes (rltrain/recorder.py); nothing here writes a run's files.
Readers meet writers without locks: run.json is replaced atomically (a reader sees the old or the new
record; a torn read of a file being replaced is retried), metrics.jsonl grows by appended lines (a torn
last line is left for the next read), and a resume rewrites it whole (a new inode: read again from the
start). Parsed files are cached on (inode, size, mtime), and metrics.jsonl is read incrementally, so
50 clients polling a run cost one parse per change, not one per request.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rltrain.record import finite, validate_run_id

STEP_FILE = re.compile(r"^step_(\d+)\.jsonl$")
CHECKPOINT_DIR = re.compile(r"^step_(\d+)$")


class RunNotFound(LookupError):
    """No such run (an invalid id, a missing directory, or one deleted while being read)."""


class RunUnreadable(RuntimeError):
    """run.json exists but does not parse, even after retries."""


def _key(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _json_lines(text: str) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a torn line (a writer mid-append, or a kill)
        if isinstance(row, dict):
            rows.append(row)
    return rows


@dataclass
class _Tail:
    """metrics.jsonl as parsed so far: rows up to `offset` bytes of the file with inode `ino`, and each
    row as strict JSON (NaN as null), encoded once: answering the whole history joins bytes."""

    ino: int = -1
    offset: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)


class RunStore:
    """Read access to `root`'s runs, safe to share between server threads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._records: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}
        self._tails: dict[Path, _Tail] = {}
        self._files: dict[Path, tuple[tuple[int, int, int], list[dict[str, Any]]]] = {}

    def run_dir(self, run_id: str) -> Path:
        """The directory of an existing run; `../`, absolute paths and other bad ids are RunNotFound."""
        try:
            validate_run_id(run_id)
        except ValueError:
            raise RunNotFound(run_id) from None
        path = self.root / run_id
        if not (path / "run.json").is_file():
            raise RunNotFound(run_id)
        return path

    def ids(self) -> list[str]:
        """Ids of the runs under root (directories with a run.json), in no particular order."""
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        return [e.name for e in entries if e.is_dir() and os.path.isfile(os.path.join(e.path, "run.json"))]

    def record(self, run_dir: Path) -> dict[str, Any]:
        """The run's record; retried briefly when it does not parse (a writer that is not atomic)."""
        path = run_dir / "run.json"
        for attempt in range(5):
            try:
                st = path.stat()
                with self._lock:
                    hit = self._records.get(path)
                if hit is not None and hit[0] == _key(st):
                    return hit[1]
                data = json.loads(path.read_text())
            except FileNotFoundError:
                raise RunNotFound(run_dir.name) from None
            except ValueError:
                time.sleep(0.01 * (attempt + 1))
                continue
            if isinstance(data, dict) and "status" in data:
                with self._lock:
                    self._records[path] = (_key(st), data)
                return data
            time.sleep(0.01 * (attempt + 1))
        raise RunUnreadable(f"run {run_dir.name}: run.json does not parse")

    def metrics(self, run_dir: Path) -> list[tuple[dict[str, Any], bytes]]:
        """metrics.jsonl's rows, each with its strict-JSON encoding."""
        path = run_dir / "metrics.jsonl"
        with self._lock:
            tail = self._tails.setdefault(path, _Tail())
            try:
                with path.open("rb") as f:
                    st = os.fstat(f.fileno())
                    if st.st_ino != tail.ino or st.st_size < tail.offset:  # new file (resume) or truncated
                        tail.ino, tail.offset, tail.rows, tail.encoded = st.st_ino, 0, [], []
                    if st.st_size > tail.offset:
                        f.seek(tail.offset)
                        chunk = f.read(st.st_size - tail.offset)
                        whole = chunk[: chunk.rfind(b"\n") + 1]  # a torn last line waits for its end
                        new = _json_lines(whole.decode(errors="replace"))
                        tail.rows += new
                        tail.encoded += [json.dumps(finite(r), allow_nan=False).encode() for r in new]
                        tail.offset += len(whole)
            except FileNotFoundError:
                self._tails.pop(path, None)
                if not run_dir.is_dir():
                    raise RunNotFound(run_dir.name) from None
                return []
            return list(zip(tail.rows, tail.encoded, strict=True))

    def rollouts(self, run_dir: Path, step: int) -> list[dict[str, Any]]:
        """rollouts/step_N.jsonl's records ([] when the step has none)."""
        return self._cached_lines(run_dir / "rollouts" / f"step_{step}.jsonl")

    def _cached_lines(self, path: Path) -> list[dict[str, Any]]:
        try:
            st = path.stat()
            with self._lock:
                hit = self._files.get(path)
            if hit is not None and hit[0] == _key(st):
                return hit[1]
            rows = _json_lines(path.read_text(errors="replace"))
        except FileNotFoundError:
            return []
        with self._lock:
            if len(self._files) > 256:  # a bound: clients may walk every step of every run
                self._files.clear()
            self._files[path] = (_key(st), rows)
        return rows

    def sample_steps(self, run_dir: Path) -> list[int]:
        return sorted(int(m.group(1)) for m in _matches(run_dir / "rollouts", STEP_FILE))

    def checkpoints(self, run_dir: Path) -> list[tuple[int, Path, bool]]:
        """(step, directory, complete) of each checkpoint; complete = its marker file is written."""
        out = []
        for m in _matches(run_dir / "checkpoints", CHECKPOINT_DIR):
            path = run_dir / "checkpoints" / m.group(0)
            out.append((int(m.group(1)), path, (path / "COMPLETE").exists()))
        return sorted(out)

    def log_text(self, run_dir: Path, max_bytes: int = 4 << 20) -> str:
        """The run's process output (output.log, written when a worker ran it), then error.log."""
        parts = []
        for name in ("output.log", "error.log"):
            try:
                with (run_dir / name).open("rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    f.seek(max(0, size - max_bytes))
                    parts.append(f.read().decode(errors="replace"))
            except FileNotFoundError:
                continue
        return "".join(parts)


def _matches(folder: Path, pattern: re.Pattern[str]) -> list[re.Match[str]]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return [m for m in map(pattern.match, names) if m is not None]
