"""Safe reward scoring: a reward function that raises, hangs or returns NaN never ends the run.

Every reward-function call (one per completion, or one per group for group functions) runs in a
worker thread with a timeout. A completion any of whose calls failed gets `error_reward`, is counted
in `errored_rollouts` (per environment), and each kind of failure is logged once. Threads cannot be
killed, so after a timeout the pool is replaced: the hung call keeps its thread, later calls get
fresh workers.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

from rltrain.config import ScoringConfig
from rltrain.envs.base import Environment, NonFiniteReward, Row

log = logging.getLogger("rltrain")


@dataclass
class GroupScores:
    rewards: list[float]
    parts: list[dict[str, float]]
    errored: int = 0


@dataclass
class Scorer:
    timeout_s: float = 60.0
    error_reward: float = 0.0
    workers: int = 8
    errors_by_kind: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._pool = self._new_pool()

    @classmethod
    def from_config(cls, cfg: ScoringConfig) -> Scorer:
        return cls(timeout_s=cfg.timeout_s, error_reward=cfg.error_reward, workers=cfg.workers)

    def _new_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="reward")

    def _failure(self, env_name: str, func: str, err: BaseException) -> str:
        if isinstance(err, FutureTimeout):
            kind, detail = "timeout", f"no result within {self.timeout_s:g}s"
        else:
            detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            kind = "non-finite" if isinstance(err, NonFiniteReward) else type(err).__name__
        key = f"{env_name}:{func}:{kind}"
        if key not in self.errors_by_kind:
            log.warning(
                "environment %s: reward %s failed (%s: %s); scoring %g and going on",
                env_name,
                func,
                kind,
                detail,
                self.error_reward,
            )
        self.errors_by_kind[key] += 1
        return kind

    def _collect(self, env_name: str, label: str, fut: Future[list[float]]) -> list[float] | None:
        try:
            return fut.result(timeout=self.timeout_s)
        except FutureTimeout as err:
            self._failure(env_name, label, err)
            self._pool.shutdown(wait=False, cancel_futures=False)
            self._pool = self._new_pool()
        except Exception as err:  # researchers' code: any exception is a scoring error
            self._failure(env_name, label, err)
        return None

    def _submit(self, env: Environment, row: Row, texts: Sequence[str]) -> list[list[Future[list[float]]]]:
        """Per function: one future for a group function, one per completion otherwise."""
        out = []
        for i in range(len(env.reward_funcs)):
            if env.is_group_func(i):
                out.append([self._pool.submit(env.call, i, row, list(texts))])
            else:
                out.append([self._pool.submit(env.call, i, row, [t]) for t in texts])
        return out

    def score(
        self, env_name: str, env: Environment, rows: Sequence[Row], texts: Sequence[Sequence[str]]
    ) -> list[GroupScores]:
        """Score each completion of each group (rows[i] with its completions texts[i])."""
        pending = [self._submit(env, row, group) for row, group in zip(rows, texts, strict=True)]
        names = env.reward_names()
        out = []
        for futures, group in zip(pending, texts, strict=True):
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
            out.append(GroupScores(rewards, [p for _, p in scored], errored=sum(failed)))
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
