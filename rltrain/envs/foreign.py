"""The trainer's side of an environment that runs in its own interpreter (`[[env]] python = ...`).

Its code (dataset loading, reward functions, env_response, tools) runs only in worker processes of that
interpreter (envs/foreign_worker.py). The trainer reads what it needs once, with the worker protocol's
`describe` call, into a `ForeignEnvironment`: an `Environment` whose rows, reward names, weights and
turn structure are the other side's, and whose calls go to those workers by the environment's name,
as every environment's calls already do. `PoolRouter` sends each environment's calls to a pool of
workers of its own interpreter.

Never imports torch; nothing here imports the environment's packages.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from rltrain.envs.base import Environment, Row
from rltrain.envs.classic import ROW
from rltrain.envs.loader import EnvironmentLoadError
from rltrain.envs.workers import CallFailed, EnvSpec, WorkerPool

DESCRIBE_TIMEOUT_S = 300.0  # loading may build a dataset; the interpreter's start is not counted


class ForeignTraceback(Exception):
    """The other interpreter's traceback, chained under the one-line error (error.log shows both)."""


def _remote(name: str) -> Callable[..., Any]:
    def remote(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{name} runs in the environment's own interpreter, through its workers")

    remote.__name__ = name
    return remote


class ForeignEnvironment(Environment):
    """An environment of another interpreter, as the trainer sees it: plain data, calls by name."""

    def __init__(self, name: str, python: str, desc: dict[str, Any]) -> None:
        # no Environment.__init__: the functions live in the other interpreter
        self.name, self.python, self.kind = name, python, str(desc.get("kind", "?"))
        self.rows = [Row(r["prompt"], r.get("answer"), r.get("info")) for r in desc["rows"]]
        self.eval_rows = [
            Row(r["prompt"], r.get("answer"), r.get("info")) for r in desc.get("eval_rows") or []
        ]
        self.eval_rows = self.eval_rows or None
        self.system_prompt = None
        names = [str(n) for n in desc["reward_names"]]
        self.reward_funcs = [_remote(n) for n in names]
        self.reward_weights = [float(w) for w in desc["reward_weights"]]
        self._args = [((), bool(g)) for g in desc["group"]]
        self.env_response = _remote("env_response") if desc.get("env_response") else None
        self._tool_schemas: list[dict[str, Any]] = list(desc.get("tools") or [])
        self.tools = {s["function"]["name"]: _remote(s["function"]["name"]) for s in self._tool_schemas}
        self.multi_turn = bool(desc["multi_turn"])
        self.max_turns = int(desc["max_turns"])
        if not self.rows or not self.reward_funcs:
            raise EnvironmentLoadError(f"environment {name!r}: no rows or no reward functions ({self.kind})")

    def tool_schemas(self) -> list[dict[str, Any]]:
        return self._tool_schemas

    def initial_state(self, row: Row) -> dict[str, Any]:
        """The row's key travels with the episode: the other side finds its own record of the row."""
        return super().initial_state(row) | {ROW: {"key": row.key}}


def load_foreign(
    spec: EnvSpec, python: str, pool: WorkerPool | PoolRouter | None = None
) -> ForeignEnvironment:
    """Load `spec` in a worker of `python` and read its description; one line if that fails. With the
    run's `pool` (one that serves `spec`), the worker that described it stays for the run's calls."""
    own = pool is None
    pool = pool or WorkerPool([spec], size=1, python=python)
    try:
        desc = pool.call(spec.name, "describe", timeout_s=DESCRIBE_TIMEOUT_S)
    except CallFailed as err:
        cause = ForeignTraceback(err.trace.rstrip()) if err.trace else None
        stage = "load_environment" if err.trace else "its worker"
        raise EnvironmentLoadError(
            f"environment {spec.name!r} (python {python}): {stage} raised {err.kind}: {err.detail}"
        ) from cause
    finally:
        if own:
            pool.close()
    return ForeignEnvironment(spec.name, python, desc)


class PoolRouter:
    """One WorkerPool per interpreter, behind WorkerPool's surface: `call(env_name, ...)`, `size`,
    `failures`, `close()`. Environments without an interpreter of their own use the trainer's."""

    def __init__(
        self, specs: list[EnvSpec], pythons: dict[str, str], size: int, memory_limit_mb: int = 0
    ) -> None:
        groups: dict[str | None, list[EnvSpec]] = {}
        for spec in specs:
            groups.setdefault(pythons.get(spec.name), []).append(spec)
        self.pools = {py: WorkerPool(group, size, memory_limit_mb, python=py) for py, group in groups.items()}
        self.by_env = {spec.name: self.pools[pythons.get(spec.name)] for spec in specs}
        self.size, self.memory_limit_mb = size, memory_limit_mb

    def add(self, env_name: str, pool: WorkerPool) -> None:
        """Send `env_name`'s calls to `pool` (one its environment brought: the worker that described it)."""
        self.by_env[env_name] = pool

    def _distinct(self) -> list[WorkerPool]:
        return list({id(p): p for p in [*self.pools.values(), *self.by_env.values()]}.values())

    @property
    def failures(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for pool in self._distinct():
            total.update(pool.failures)
        return total

    def call(self, env_name: str, method: str, *args: Any, timeout_s: float) -> Any:
        return self.by_env[env_name].call(env_name, method, *args, timeout_s=timeout_s)

    def close(self) -> None:
        for pool in self._distinct():
            pool.close()
