"""Run lifecycle: `submit` queues a run, `worker` runs queued runs, `runs cancel` stops one, stale detection.

Two locks, both `flock`s that the kernel drops when their holder dies, so no lock can go stale:
- `runs/<id>/.lock` is taken by the training process itself (rundir.acquire_lock) for its whole life.
  "status running but nobody holds `.lock`" therefore means the process died without saying so
  (kill -9, OOM killer, power loss): the run is shown as `failed-stale`.
- `runs/<id>/.claim` is taken by a worker before it starts a queued run and held until the training
  process exits. A worker re-reads the status under the claim, so two workers never start the same run,
  and `runs cancel` takes the same claim to cancel a queued run without racing a worker.
This module never imports torch: `submit`, `runs` and the worker start in well under a second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from rltrain.fsutil import try_flock, unlock
from rltrain.record import RunRecord, validate_run_id
from rltrain.rundir import create_run_dir, env_file_paths

if TYPE_CHECKING:
    from rltrain.config import Config

LOCK, CLAIM, LOG = ".lock", ".claim", "output.log"
TERMINAL = ("succeeded", "failed", "cancelled")


def runs_root() -> Path:
    return Path(os.environ.get("RLTRAIN_RUNS", "runs"))


def run_path(root: Path, run_id: str) -> Path:
    """The run dir for an id typed on the command line; the id is validated so it cannot escape `root`."""
    return root / validate_run_id(run_id)


def read_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        data = None
    return data if isinstance(data, dict) and "status" in data else None


def _proc_locks_pid(path: Path) -> int | None:
    """Holder of a flock on `path` per /proc/locks (Linux): reading it never disturbs the lock."""
    st = path.stat()
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for fields in (line.split() for line in lines):
        if want in fields and "FLOCK" in fields and "->" not in fields:  # "->" rows are waiters
            pid = int(fields[fields.index(want) - 1])
            return pid if pid > 0 else _pid_in_file(path)
    return None


def _pid_in_file(path: Path) -> int:
    text = path.read_text().strip()
    return int(text) if text.isdigit() else -1  # -1: held, holder unknown


def lock_holder(run_dir: Path) -> int | None:
    """Pid of the process holding the run's `.lock` (-1 if held by an unknown pid), or None if free."""
    path = run_dir / LOCK
    try:
        pid = _proc_locks_pid(path)
        if pid is not None:
            return pid
        # Not listed (or no /proc): confirm with a shared-lock probe, held for microseconds only.
        with path.open("r") as f:
            if not try_flock(f, shared=True):
                return _pid_in_file(path)
            unlock(f)
    except FileNotFoundError:
        return None
    return None


def effective_status(run_dir: Path, record: dict[str, Any]) -> str:
    status = str(record["status"])
    return "failed-stale" if status == "running" and lock_holder(run_dir) is None else status


def try_claim(run_dir: Path) -> IO[str] | None:
    """The run's worker claim, or None when another process holds it. Closing the file releases it."""
    f = (run_dir / CLAIM).open("a+")
    if not try_flock(f):
        f.close()
        return None
    _write_claim(f, {"worker": os.getpid()})  # drop the previous claimant's child pid at once
    return f


def _write_claim(f: IO[str], info: dict[str, int]) -> None:
    f.seek(0)
    f.truncate()
    f.write(json.dumps(info))
    f.flush()


def _claim_child(run_dir: Path) -> int | None:
    try:
        child = json.loads((run_dir / CLAIM).read_text()).get("child")
    except (OSError, ValueError):
        return None
    return int(child) if isinstance(child, int) and child > 0 else None


def _pin(path: str | None) -> str | None:
    """A local file or directory the config names, made absolute (a name that is not one stays)."""
    return str(Path(path).expanduser().resolve()) if path and Path(path).expanduser().exists() else path


def _pin_python(path: str | None) -> str | None:
    """An environment's interpreter made absolute, not resolved: a venv's python links out of its venv."""
    return str(Path(path).expanduser().absolute()) if path and Path(path).expanduser().exists() else path


def _pin_paths(cfg: Config, config_dir: Path) -> None:
    """A worker may run elsewhere: make the config's local paths absolute, resolved as `train` would."""
    from rltrain.config import ConfigError

    try:
        cfg.env_files = [str(p) for p in env_file_paths(cfg.env_files, config_dir)]
    except FileNotFoundError as err:
        raise ConfigError(f"config error: {err}") from None
    for entry in [*cfg.env, *(cfg.eval.env if cfg.eval is not None else [])]:
        if entry.id is not None and entry.id.endswith(".py"):  # a taskset-only entry has no id
            entry.id = _pin(entry.id)
        entry.path = _pin(entry.path)
        entry.python = _pin_python(entry.python)
        if entry.openenv is not None:
            entry.openenv.path = _pin(entry.openenv.path)
            entry.openenv.python = _pin_python(entry.openenv.python)
    cfg.checkpoint_id = _pin(cfg.checkpoint_id)


def submit(config: str, overrides: list[str], runs: Path | None = None) -> Path:
    """Validate the config and record a `queued` run (under `runs`, else run.output_dir); returns its
    directory."""
    from rltrain.config import load_config  # pydantic: only `submit` needs it, not `runs`

    cfg = load_config(config, overrides)
    _pin_paths(cfg, Path(config).resolve().parent)
    if runs is not None:
        cfg.run.output_dir = str(runs)
    # config.json before run.json: a worker only looks at dirs with run.json, and then needs the config
    return create_run_dir(cfg)[0]


def all_runs(root: Path) -> list[Path]:
    """Run dirs, oldest first (created_at, then id)."""
    dirs = {p.parent: read_record(p.parent) or {} for p in root.glob("*/run.json")}
    return sorted(dirs, key=lambda d: (str(dirs[d].get("created_at", "")), d.name))


def queued_runs(root: Path) -> list[Path]:
    return [d for d in all_runs(root) if (read_record(d) or {}).get("status") == "queued"]


class Worker:
    """Runs queued runs one after another, each in its own `python -m rltrain --resume` process."""

    def __init__(self, root: Path, poll: float = 5.0) -> None:
        self.root = root
        self.poll = poll
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False

    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
        """Forward SIGTERM to the run (it checkpoints, ends cancelled), then exit; a 2nd stops it at once."""
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def run(self, once: bool = False) -> list[str]:
        """Run queued runs until stopped (or, with `once`, until none is left); returns the ids run."""
        done: list[str] = []
        while not self.stopping:
            ran = next((d.name for d in queued_runs(self.root) if self.run_one(d)), None)
            if ran is not None:
                done.append(ran)
            elif once:
                break
            else:
                deadline = time.monotonic() + self.poll
                while not self.stopping and time.monotonic() < deadline:
                    time.sleep(0.2)  # short naps: a signal ends the wait promptly
        return done

    def run_one(self, run_dir: Path) -> str | None:
        """Claim and run one queued run; returns its final status, or None if it was not ours to run."""
        if self.stopping:
            return None
        claim = try_claim(run_dir)
        if claim is None:
            return None
        with claim:
            rec = read_record(run_dir)
            # Re-check under the claim: another worker may have run it since we listed the queue.
            if rec is None or rec["status"] != "queued" or lock_holder(run_dir) is not None:
                return None
            with (run_dir / LOG).open("ab") as log:
                # Own session: a Ctrl-C in the worker's terminal reaches only the worker, which forwards
                # exactly one SIGTERM (two signals would stop the run without a final checkpoint).
                self.child = subprocess.Popen(
                    [sys.executable, "-m", "rltrain", "--resume", str(run_dir)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            _write_claim(claim, {"worker": os.getpid(), "child": self.child.pid})
            print(f"rltrain worker: {run_dir.name}: started (pid {self.child.pid})", flush=True)
            rc = self.child.wait()
            self.child = None
            status = reconcile(run_dir, rc)
        print(f"rltrain worker: {run_dir.name}: {status}", flush=True)
        return status


def reconcile(run_dir: Path, rc: int) -> str:
    """After the training process exits: record an outcome it could not record itself (killed, bad start)."""
    rec = read_record(run_dir)
    if rec is None:
        return "missing"
    if rec["status"] in TERMINAL or lock_holder(run_dir) is not None:
        return str(rec["status"])
    if rc == -signal.SIGTERM:  # cancelled before the run installed its own handler
        status, error = "cancelled", "stopped by SIGTERM before training started"
    else:
        how = f"was killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with code {rc}"
        lines = (run_dir / LOG).read_text(errors="replace").strip().splitlines() or [""]
        status, error = "failed", f"training process {how} without recording an outcome: {lines[-1][-300:]}"
    RunRecord(run_dir / "run.json", rec).set_status(status, error=error)
    return status


def _signal(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():  # never signal ourselves (a run held in this process)
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def _cancel_unowned(run_dir: Path, claim: IO[str]) -> str | None:
    """Cancel a run nobody is running (queued, or stale) while holding its claim; None: it came alive."""
    with claim:
        rec = read_record(run_dir)
        if rec is None or rec["status"] in TERMINAL:
            return f"run {run_dir.name} is {rec['status'] if rec else 'gone'}"
        if lock_holder(run_dir) is not None:
            return None
        why = "before it started" if rec["status"] == "queued" else "after its process had died (stale)"
        RunRecord(run_dir / "run.json", rec).set_status("cancelled", error=f"cancelled {why}")
        return f"run {run_dir.name} cancelled ({why})"


def cancel(run_dir: Path, timeout: float = 10.0) -> str:
    """Cancel a queued run now, or SIGTERM the process running it (it checkpoints and ends cancelled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = read_record(run_dir)
        if rec is None:
            raise FileNotFoundError(f"no run {run_dir.name!r} in {run_dir.parent}")
        if rec["status"] in TERMINAL:
            return f"run {run_dir.name} is already {rec['status']}"
        pid = lock_holder(run_dir)
        if pid is not None and _signal(pid):
            return f"sent SIGTERM to pid {pid}: run {run_dir.name} stops after this step with a checkpoint"
        claim = try_claim(run_dir)
        if claim is not None:
            done = _cancel_unowned(run_dir, claim)
            if done is not None:
                return done
            continue
        child = _claim_child(run_dir)  # a worker is starting it; its child may not hold .lock yet
        if child is not None and _signal(child):
            return f"sent SIGTERM to pid {child} (starting): run {run_dir.name} ends cancelled"
        time.sleep(0.1)
    raise RuntimeError(f"runs cancel: could not reach the process of run {run_dir.name}")


def wait_until_done(run_dir: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = read_record(run_dir)
        if rec is not None and rec["status"] in TERMINAL and lock_holder(run_dir) is None:
            return str(rec["status"])
        time.sleep(0.2)
    return effective_status(run_dir, read_record(run_dir) or {"status": "missing"})
