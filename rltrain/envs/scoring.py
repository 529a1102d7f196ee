"""Safe reward scoring: a reward function that raises, hangs, crashes or returns NaN never ends the run.

Every reward-function call (one per completion, or one per group for group functions) runs in a worker
process of the run's `WorkerPool` (rltrain/envs/workers.py) with a timeout. A completion any of whose
calls failed gets `error_reward`, is counted in `errored_rollouts` (per environment), and each kind of
failure is logged once. A worker that hung, crashed or ran out of memory is killed and replaced, so
nothing is left behind: the run's process exits as soon as its last step is done.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from rltrain.config import ScoringConfig
from rltrain.envs.base import Environment, Row
from rltrain.envs.workers import CallFailed, EnvSpec, WorkerPool

log = logging.getLogger("rltrain")


class Pool(Protocol):
    """Worker processes that run environment code by the environment's name: a WorkerPool, or a
    PoolRouter (envs/foreign.py) over pools of other interpreters."""

    size: int  # calls at once
    memory_limit_mb: int

    def call(self, env_name: str, method: str, *args: Any, timeout_s: float) -> Any: ...

    def close(self) -> None: ...


@dataclass
class GroupScores:
    rewards: list[float]
    parts: list[dict[str, float]]
    errored: int = 0
    failed: list[bool] = field(default_factory=list)  # per completion: a reward call failed


def default_workers() -> int:
    return max(2, min(8, os.cpu_count() or 2))


@dataclass
class Scorer:
    pool: Pool
    timeout_s: float = 60.0
    error_reward: float = 0.0
    errors_by_kind: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        # these threads only wait on worker pipes, each with a deadline: none can hang
        self._threads = ThreadPoolExecutor(max_workers=self.pool.size, thread_name_prefix="reward")

    @classmethod
    def start(cls, cfg: ScoringConfig, specs: list[EnvSpec]) -> Scorer:
        pool = WorkerPool(specs, cfg.workers or default_workers(), cfg.memory_limit_mb)
        return cls(pool, timeout_s=cfg.timeout_s, error_reward=cfg.error_reward)

    def _failure(self, env_name: str, func: str, err: CallFailed) -> None:
        key = f"{env_name}:{func}:{err.kind}"
        if key not in self.errors_by_kind:
            log.warning(
                "environment %s: reward %s failed (%s: %s); scoring %g and going on",
                env_name,
                func,
                err.kind,
                err.detail,
                self.error_reward,
            )
        self.errors_by_kind[key] += 1

    def _submit(
        self, env_name: str, env: Environment, row: Row, items: Sequence[Any]
    ) -> list[list[Future[Any]]]:
        """Per function: one future for a group function, one per completion otherwise."""
        out = []
        for i in range(len(env.reward_funcs)):
            chunks = [list(items)] if env.is_group_func(i) else [[item] for item in items]
            call = self.pool.call
            out.append(
                [
                    self._threads.submit(call, env_name, "call", i, row, c, timeout_s=self.timeout_s)
                    for c in chunks
                ]
            )
        return out

    def _collect(self, env_name: str, label: str, fut: Future[Any]) -> list[float] | None:
        try:
            return list(fut.result())
        except CallFailed as err:
            self._failure(env_name, label, err)
        return None

    def score(
        self, env_name: str, env: Environment, rows: Sequence[Row], items: Sequence[Sequence[Any]]
    ) -> list[GroupScores]:
        """Score each group (rows[i] with its completions items[i]: texts, or (messages, state) episodes)."""
        pending = [self._submit(env_name, env, row, group) for row, group in zip(rows, items, strict=True)]
        names = env.reward_names()
        out = []
        for futures, group in zip(pending, items, strict=True):
            n = len(group)
            failed = [False] * n
            values: list[list[float]] = []
            for i, funcs in enumerate(futures):
                got = [self._collect(env_name, names[i], f) for f in funcs]
                row_values: list[float | None]
                if env.is_group_func(i):
                    row_values = list(got[0]) if got[0] is not None else [None] * n
                else:
                    row_values = [g[0] if g is not None else None for g in got]
                failed = [f or v is None for f, v in zip(failed, row_values, strict=True)]
                values.append([v if v is not None else 0.0 for v in row_values])
            scored = env.combine(values)
            rewards = [
                self.error_reward if bad else total for bad, (total, _) in zip(failed, scored, strict=True)
            ]
            out.append(GroupScores(rewards, [p for _, p in scored], errored=sum(failed), failed=failed))
        return out

    def close(self) -> None:
        self.pool.close()
        self._threads.shutdown(wait=False, cancel_futures=True)
