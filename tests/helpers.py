"""Helpers several test modules share: a validated run record, and the CLI as a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema

from rltrain.record import load_schema


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
