"""The routes prime 0.18 calls (`prime train list/get/stop/delete/logs/metrics/rollouts/progress/
checkpoints/distributions/usage`, and `prime train rl.toml`'s create), answered from a runs directory.

Each handler takes the run's id (or none), the query and the JSON body, and returns (HTTP status,
JSON object); `ApiError` is a 4xx answer with prime's `{"detail": ...}` body. The dashboard uses the
same routes. `stop` is `runs cancel`; `delete` moves a run that no process holds to `<runs>/.deleted/`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rltrain.serve import shapes
from rltrain.serve.store import RunNotFound, RunStore

Reply = tuple[int, dict[str, Any] | bytes]  # bytes: a JSON body already encoded
TRASH = ".deleted"


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _int(query: dict[str, str], name: str, default: int | None, lo: int = 0, hi: int = 10**9) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name}: {raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name}: {value} is outside {lo}..{hi}")
    return value


def _queue() -> Any:
    from rltrain import queue  # the run lifecycle: locks, claims, cancel

    return queue


class Api:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = RunStore(root)

    def status(self, run_dir: Path, record: dict[str, Any]) -> str:
        return str(_queue().effective_status(run_dir, record))

    def run(self, run_dir: Path) -> dict[str, Any]:  # prime's RLRun
        record = self.store.record(run_dir)
        return shapes.rl_run(record, self.status(run_dir, record), run_dir)

    # --- runs -------------------------------------------------------------------------------------
    def list_runs(self, _: str, query: dict[str, str], body: Any) -> Reply:
        page = _int(query, "page", 1, lo=1) or 1
        limit = _int(query, "limit", 20, lo=1, hi=1000) or 20
        wanted = shapes.local_statuses(query.get("status", ""))
        runs = []
        for run_id in self.store.ids():
            try:
                run = self.run(self.root / run_id)
            except (RunNotFound, RuntimeError):  # deleted or unreadable while listing: not listed
                continue
            if not wanted or run["rltrain"]["status"] in wanted:
                runs.append(run)
        runs.sort(key=lambda r: (str(r["createdAt"]), r["id"]), reverse=True)
        total = len(runs)
        pages = max(1, math.ceil(total / limit))
        chosen = runs[(page - 1) * limit : page * limit]
        return 200, {"runs": chosen, "total": total, "page": page, "limit": limit, "total_pages": pages}

    def get_run(self, run_id: str, query: dict[str, str], body: Any) -> Reply:
        return 200, {"run": self.run(self.store.run_dir(run_id))}

    def stop(self, run_id: str, query: dict[str, str], body: Any) -> Reply:
        run_dir = self.store.run_dir(run_id)
        try:
            _queue().cancel(run_dir, timeout=5.0)
        except FileNotFoundError:
            raise RunNotFound(run_id) from None
        except RuntimeError as err:
            raise ApiError(409, str(err)) from None
        return 200, {"run": self.run(run_dir)}

    def delete(self, run_id: str, query: dict[str, str], body: Any) -> Reply:
        run_dir = self.store.run_dir(run_id)
        queue = _queue()
        if queue.lock_holder(run_dir) is not None:
            raise ApiError(409, f"run {run_id} is running: stop it first (prime train stop {run_id})")
        claim = queue.try_claim(run_dir)  # a worker may be starting it: the claim keeps it from that
        if claim is None:
            raise ApiError(409, f"run {run_id} is being started by a worker: stop it first")
        with claim:
            if queue.lock_holder(run_dir) is not None:
                raise ApiError(409, f"run {run_id} is running: stop it first (prime train stop {run_id})")
            trash = self.root / TRASH
            trash.mkdir(exist_ok=True)
            run_dir.rename(trash / f"{run_id}-{time.strftime('%Y%m%d-%H%M%S')}")
        return 200, {"runId": run_id, "deleted": True}

    def restart(self, run_id: str, query: dict[str, str], body: Any) -> Reply:
        run_dir = self.store.run_dir(run_id)
        raise ApiError(
            501, f"rltrain restarts no run in place: stop it, then `python -m rltrain --resume {run_dir}`"
        )

    # --- monitoring -------------------------------------------------------------------------------
    def logs(self, run_id: str, query: dict[str, str], body: Any) -> Reply:
        run_dir = self.store.run_dir(run_id)
        tail = _int(query, "tail_lines", 1000, lo=1, hi=100_000) or 1000
        lines = self.store.log_text(run_dir).splitlines()
        search = query.get("search")
        if search:
            try:
                pattern = re.compile(
                    search if query.get("regex") in ("true", "True", "1") else re.escape(search)
                )
            except re.error as err:
                raise ApiError(400, f"search: not a regular expression: {err}") from None
            lines = [line for line in lines if pattern.search(line)]
        return 200, {"logs": "\n".join(lines[-tail:])}

    def metrics(self, run_id: str, query: dict[str, str], body: Any) -> Reply:
        rows = self.store.metrics(self.store.run_dir(run_id))
        lo, hi = _int(query, "min_step", None), _int(query, "max_step", None)
        limit = _int(query, "limit", None, lo=1)
        if lo is not None or hi is not None:
            low, high = lo if lo is not None else -1, hi if hi is not None else 10**18
            rows = [(r, b) for r, b in rows if low <= r.get("step", 0) <= high]
        chosen = rows[-limit:] if limit else rows
        return 200, b'{"metrics": [' + b", ".join(b for _, b in chosen) + b"]}"

    def samples(self, run_id: str, query: dict[str, str], body: Any) -> Reply:
        run_dir = self.store.run_dir(run_id)
        step = _int(query, "step", None)
        if step is None:
            raise ApiError(400, "step: required (prime train rollouts RUN --step N)")
        page = _int(query, "page", 1, lo=1) or 1
        limit = _int(query, "limit", 100, lo=1, hi=1000) or 100
        records = self.store.rollouts(run_dir, step)
        chosen = records[(page - 1) * limit : page * limit]
        samples = [{"step": step, "index": (page - 1) * limit + i, **r} for i, r in enumerate(chosen)]
        pages = math.ceil(len(records) / limit)
        return 200, {
            "run_id": run_id, "samples": samples, "total": len(records),
            "page": page, "limit": limit, "total_pages": pages,
        }  # fmt: skip

    def progress(self, run_id: str, query: dict[str, str], body: Any) -> Reply:
        run_dir = self.store.run_dir(run_id)
        record = self.store.record(run_dir)
        steps = self.store.sample_steps(run_dir)
        return 200, {
            "latestStep": (record.get("metrics") or {}).get("step"),
            "stepsWithSamples": steps,
            "stepsWithDistributions": steps,
            "lastUpdatedAt": record.get("updated_at") or record.get("created_at"),
        }

    def checkpoints(self, run_id: str, query: dict[str, str], body: Any) -> Reply:
        run_dir = self.store.run_dir(run_id)
        wanted = query.get("status_filter", "").upper()
        out = []
        for step, path, complete in self.store.checkpoints(run_dir):
            try:
                item = shapes.checkpoint(run_id, step, path, complete, path.stat().st_mtime)
            except FileNotFoundError:  # pruned (keep_last) while we looked
                continue
            if not wanted or item["status"] == wanted:
                out.append(item)
        return 200, {"checkpoints": out}

    def distributions(self, run_id: str, query: dict[str, str], body: Any) -> Reply:
        run_dir = self.store.run_dir(run_id)
        kind = query.get("type") or "rewards"
        if kind not in ("rewards", "advantages"):
            raise ApiError(400, f"type: {kind!r} is not one of rewards, advantages")
        steps = self.store.sample_steps(run_dir)
        step = _int(query, "step", steps[-1] if steps else None)
        if step is None:
            return 200, {"bins": [], "step": None, "type": kind}
        key = "reward" if kind == "rewards" else "advantage"
        values = [
            float(r[key]) for r in self.store.rollouts(run_dir, step) if isinstance(r.get(key), (int, float))
        ]
        return 200, {"bins": shapes.histogram(values), "step": step, "type": kind}

    def usage(self, run_id: str, query: dict[str, str], body: Any) -> Reply:
        run_dir = self.store.run_dir(run_id)
        record = self.store.record(run_dir)
        return 200, shapes.usage(record, self.status(run_dir, record))

    def create(self, _: str, query: dict[str, str], body: Any) -> Reply:
        from rltrain.serve.submit import queue_run

        try:
            run_id = queue_run(body, self.root)
        except ValueError as err:
            raise ApiError(422 if "config error" in str(err) else 400, str(err)) from None
        return 200, {"runId": run_id, "tokenValue": ""}  # no per-run token: the run is local


Handler = Callable[[Api, str, dict[str, str], Any], Reply]
RUN = r"(?P<id>[^/]+)"
ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    (method, re.compile(f"^/api/v1{path}$"), handler)
    for method, path, handler in [
        ("GET", "/rft/runs", Api.list_runs),
        ("GET", f"/rft/runs/{RUN}", Api.get_run),
        ("DELETE", f"/rft/runs/{RUN}", Api.delete),
        ("PUT", f"/rft/runs/{RUN}/stop", Api.stop),
        ("PUT", f"/rft/runs/{RUN}/restart", Api.restart),
        ("GET", f"/rft/runs/{RUN}/logs", Api.logs),
        ("GET", f"/rft/runs/{RUN}/metrics", Api.metrics),
        ("GET", f"/rft/runs/{RUN}/samples", Api.samples),
        ("GET", f"/rft/runs/{RUN}/progress", Api.progress),
        ("GET", f"/rft/runs/{RUN}/checkpoints", Api.checkpoints),
        ("GET", f"/rft/runs/{RUN}/distributions", Api.distributions),
        ("GET", f"/billing/runs/{RUN}/usage", Api.usage),
        ("POST", "/training/runs", Api.create),
    ]
]
