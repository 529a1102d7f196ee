"""Helpers several test modules share: a validated run record, and the CLI as a child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema

from rltrain.record import load_schema, read_jsonl


def valid_record(run_dir: Path) -> dict[str, Any]:
    """The run's record, validated against the training-run schema."""
    record = json.loads((run_dir / "run.json").read_text())
    jsonschema.validate(record, load_schema())
    return record  # type: ignore[no-any-return]


def cli(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """`python -m rltrain ARGS` in `cwd`, stdout and stderr merged, unbuffered."""
    return subprocess.Popen(
        [sys.executable, "-m", "rltrain", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def interrupted_run(cfg: dict[str, Any], tmp_path: Path, after_steps: int = 3) -> tuple[Path, dict[str, Any]]:
    """Start `cfg` (its run id names the directory) through the CLI, Ctrl-C it once `after_steps`
    steps are logged, and return the run directory and its validated record; the CLI must exit 0."""
    from tomli_w import dumps

    path = tmp_path / "c.toml"
    path.write_text(dumps(cfg))
    proc = cli("--config", str(path), cwd=tmp_path)
    run_dir = tmp_path / "runs" / cfg["run"]["id"]
    deadline = time.time() + 120
    while time.time() < deadline and len(read_jsonl(run_dir / "metrics.jsonl")) < after_steps:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    record = valid_record(run_dir)
    assert record["status"] == "cancelled", out
    return run_dir, record
