"""Local runs in the shapes of prime 0.18's Hosted Training API (prime_cli/api/rl.py, api/billing.py).

Statuses, local -> prime (`prime train list/get` show prime's words; `stop` waits for a terminal one):

| local (run.json)  | prime     | note                                                    |
|-------------------|-----------|---------------------------------------------------------|
| queued            | QUEUED    | waiting for `python -m rltrain worker`                  |
| running           | RUNNING   |                                                         |
| failed-stale      | FAILED    | running, but no process holds the run (errorMessage says so) |
| succeeded         | COMPLETED |                                                         |
| failed            | FAILED    |                                                         |
| cancelled         | STOPPED   | `prime train stop`, `runs cancel`, Ctrl-C, SIGTERM      |

and back (the `status` filter of GET /rft/runs takes either vocabulary): QUEUED, PENDING -> queued;
RUNNING, PAUSING -> running; COMPLETED -> succeeded; FAILED -> failed; STOPPED, PAUSED -> cancelled
(prime's PENDING, PAUSING and PAUSED never come from a local run).

Every run also carries an `rltrain` object (prime's models ignore unknown keys): the local status,
step, last reward, tokens and cost, which the dashboard shows.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TO_PRIME = {
    "queued": "QUEUED",
    "running": "RUNNING",
    "failed-stale": "FAILED",
    "succeeded": "COMPLETED",
    "failed": "FAILED",
    "cancelled": "STOPPED",
}
FROM_PRIME = {
    "QUEUED": "queued",
    "PENDING": "queued",
    "RUNNING": "running",
    "PAUSING": "running",
    "COMPLETED": "succeeded",
    "FAILED": "failed",
    "STOPPED": "cancelled",
    "PAUSED": "cancelled",
}
TERMINAL = ("succeeded", "failed", "cancelled")
USER = getpass.getuser()


def local_statuses(wanted: str) -> set[str]:
    """A `status` filter (comma-separated, either vocabulary) as local statuses."""
    out = set()
    for word in filter(None, (w.strip() for w in wanted.split(","))):
        local = FROM_PRIME.get(word.upper(), word.lower())
        out |= {local, "failed-stale"} if local == "failed" else {local}
    return out


def _env_entries(config: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for e in config.get("env") or []:
        if isinstance(e, dict):
            name = e.get("name") or e.get("id") or (e.get("taskset") or {}).get("id")
            out.append({"id": e.get("id"), "name": name, "args": e.get("args") or {}})
    return out


def _ts(value: Any) -> str | None:
    return str(value) if value else None


def summary(record: dict[str, Any], status: str) -> dict[str, Any]:
    """What the dashboard's table shows of a run, in camelCase like the rest of the payload."""
    m, u = record.get("metrics") or {}, record.get("usage") or {}
    return {
        "status": status,
        "step": m.get("step", 0),
        "rewardMean": m.get("reward_mean"),
        "tokens": int(u.get("input_tokens", 0) or 0) + int(u.get("output_tokens", 0) or 0),
        "costUsd": u.get("cost_usd", 0.0),
        "environment": record.get("environment"),
        "checkpoints": len(record.get("checkpoints") or []),
    }


def rl_run(record: dict[str, Any], status: str, run_dir: Path) -> dict[str, Any]:
    """prime's RLRun (by its aliases) for a local run; `status` is the effective local status."""
    cfg = record.get("config") or {}
    wandb = cfg.get("wandb") or {}
    m = record.get("metrics") or {}
    created = _ts(record.get("created_at")) or datetime.now(UTC).isoformat()
    error = record.get("error")
    if status == "failed-stale":
        error = f"failed-stale: no process holds this run; continue it: python -m rltrain --resume {run_dir}"
    return {
        "id": record.get("id", run_dir.name),
        "name": cfg.get("name") or record.get("id", run_dir.name),
        "userId": USER,
        "teamId": record.get("team_id"),
        "status": TO_PRIME.get(status, "FAILED"),
        "kind": "EXTERNAL",  # prime's word for a run prime's platform does not host
        "rolloutsPerExample": cfg.get("rollouts_per_example"),
        "seqLen": cfg.get("seq_len"),
        "maxSteps": cfg.get("max_steps"),
        "maxTokens": (cfg.get("sampling") or {}).get("max_tokens"),
        "batchSize": cfg.get("batch_size"),
        "loss": cfg.get("loss", "rl"),
        "baseModel": record.get("base_model"),
        "environments": _env_entries(cfg),
        "runConfig": cfg,
        "evalConfig": cfg.get("eval"),
        "valConfig": cfg.get("val"),
        "learningRate": cfg.get("learning_rate"),
        "loraAlpha": (cfg.get("lora") or {}).get("alpha") or cfg.get("lora_alpha"),
        "maxInflightRollouts": cfg.get("max_inflight_rollouts"),
        "oversamplingFactor": cfg.get("oversampling_factor"),
        # a queued run's "auto" is settled only when it starts (0 on CPU, 1 on a GPU): unknown until then
        "maxAsyncLevel": level if isinstance(level := cfg.get("max_async_level"), int) else None,
        "gpuCount": int(m["world_size"]) if isinstance(m.get("world_size"), (int, float)) else None,
        "wandbEntity": wandb.get("entity"),
        "wandbProject": wandb.get("project"),
        "wandbRunName": wandb.get("name"),
        "startedAt": None,
        "completedAt": _ts(record.get("updated_at")) if status in TERMINAL else None,
        "errorMessage": error,
        "createdAt": created,
        "updatedAt": _ts(record.get("updated_at")) or created,
        "rltrain": summary(record, status),
    }


def checkpoint(run_id: str, step: int, path: Path, complete: bool, created: float) -> dict[str, Any]:
    """prime's RLCheckpoint for checkpoints/step_N (READY once its COMPLETE marker is written)."""
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file()) if complete else None
    when = datetime.fromtimestamp(created, UTC).isoformat()
    return {
        "id": f"{run_id}/step_{step}",
        "rftRunId": run_id,
        "step": step,
        "storageUrl": path.resolve().as_uri(),
        "status": "READY" if complete else "PENDING",
        "sizeBytes": size,
        "createdAt": when,
        "uploadedAt": when if complete else None,
    }


def usage(record: dict[str, Any], status: str) -> dict[str, Any]:
    """prime's RunUsage (GET /billing/runs/{id}/usage): rltrain's cost is device time, so it is all
    under training; inference holds the sampled tokens at no separate price."""
    u = record.get("usage") or {}
    inp, out, train = (int(u.get(k, 0) or 0) for k in ("input_tokens", "output_tokens", "training_tokens"))
    cost = float(u.get("cost_usd", 0.0) or 0.0)
    return {
        "run_id": record.get("id"),
        "run_name": record.get("id"),
        "base_model": record.get("base_model"),
        "status": TO_PRIME.get(status, "FAILED"),
        "training": {"tokens": train, "input_tokens": 0, "output_tokens": 0, "cost_usd": cost},
        "inference": {"tokens": inp + out, "input_tokens": inp, "output_tokens": out, "cost_usd": 0.0},
        "total_tokens": train + inp + out,
        "total_cost_usd": cost,
        "pricing": {},
        "record_count": int((record.get("metrics") or {}).get("step", 0) or 0),  # one per step
    }


def histogram(values: list[float], bins: int = 10) -> list[dict[str, float]]:
    """Equal-width bins over [min, max] of `values` ({start, end, count} each)."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    return [{"start": lo + i * width, "end": lo + (i + 1) * width, "count": c} for i, c in enumerate(counts)]
