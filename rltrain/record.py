"""The run record (`run.json`): its only writer. Every write is atomic (temp file + rename)."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from rltrain.fsutil import atomic_write_text

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Config keys whose values are never copied into the record.
SECRET_HINTS = ("key", "token", "secret", "password", "credential")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def validate_run_id(run_id: str) -> str:
    """Run ids become directory names: no separators, no `..`, nothing that escapes output_dir."""
    if not RUN_ID_RE.match(run_id) or ".." in run_id:
        raise ValueError(f"run.id: {run_id!r} is not a valid run id (letters, digits, . _ -; at most 128)")
    return run_id


def load_schema() -> dict[str, Any]:
    text = resources.files("rltrain").joinpath("schema/training-run.schema.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def redact(value: Any) -> Any:
    """A copy of a config dict with values under secret-looking keys replaced."""
    if isinstance(value, dict):
        return {
            k: "<redacted>" if any(h in k.lower() for h in SECRET_HINTS) and isinstance(v, str) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


class RunRecord:
    """In-memory view of `run.json`; `save()` writes it atomically."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def create(
        cls,
        run_dir: Path,
        *,
        run_id: str,
        base_model: str,
        environment: str,
        config: dict[str, Any],
        team_id: str | None,
        status: str = "running",
    ) -> RunRecord:
        data: dict[str, Any] = {
            "id": run_id,
            "base_model": base_model,
            "environment": environment,
            "config": redact(config),
            "status": status,
            "metrics": {},
            "checkpoints": [],
            "usage": {"input_tokens": 0, "output_tokens": 0, "training_tokens": 0, "cost_usd": 0.0},
            "created_at": now_iso(),
        }
        if team_id:
            data["team_id"] = team_id
        rec = cls(run_dir / "run.json", data)
        rec.save()
        return rec

    @classmethod
    def load(cls, run_dir: Path) -> RunRecord:
        path = run_dir / "run.json"
        return cls(path, json.loads(path.read_text()))

    @property
    def status(self) -> str:
        return str(self.data["status"])

    def set_status(self, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        self.data["status"] = status
        self.data["updated_at"] = now_iso()
        if error is not None:
            self.data["error"] = error
        elif status in ("running", "succeeded"):
            self.data.pop("error", None)
        self.save()

    def update(
        self, metrics: dict[str, Any], usage: dict[str, Any], checkpoints: list[str], durable: bool = False
    ) -> None:
        self.data["metrics"] = metrics
        self.data["usage"] = usage
        self.data["checkpoints"] = checkpoints
        self.data["updated_at"] = now_iso()
        self.save(durable=durable)  # every step; status changes and checkpoints are durable

    def save(self, durable: bool = True) -> None:
        text = json.dumps(finite(self.data), indent=2, default=str, allow_nan=False)
        atomic_write_text(self.path, text + "\n", durable=durable)


def finite(value: Any) -> Any:
    """NaN/inf as null: a skipped update logs a NaN loss, and a bare NaN is not JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    return [finite(v) for v in value] if isinstance(value, list) else value


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """One metrics row per line; a torn last line (kill mid-write) is skipped by `read_jsonl`, and a
    resume rewrites the file up to its checkpoint. Not fsynced: a lost tail is replayed on resume."""
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def truncate_jsonl(path: Path, max_step: int) -> None:
    """Drop rows past `max_step` (a resumed run replays those steps)."""
    rows = [r for r in read_jsonl(path) if int(r.get("step", 0)) <= max_step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
