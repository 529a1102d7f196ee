"""Safe reward scoring: a reward function that raises, hangs or returns NaN never ends the run.

Each group is scored in a worker thread with a timeout; a failure gives `error_reward` for that
group's completions, is counted, and is logged once per kind of error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

from rltrain.envs.base import Environment, Row

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
    workers: int = 4
    errors_by_kind: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="reward")

    def _failed(self, env_name: str, kind: str, detail: str) -> tuple[float, dict[str, float]]:
        key = f"{env_name}:{kind}"
        if key not in self.errors_by_kind:
            log.warning(
                "environment %s: reward %s (%s); scoring %s and going on",
                env_name,
                kind,
                detail,
                self.error_reward,
            )
        self.errors_by_kind[key] = self.errors_by_kind.get(key, 0) + 1
        return self.error_reward, {}

    def _result(
        self, env_name: str, fut: Future[tuple[float, dict[str, float]]]
    ) -> tuple[float, dict[str, float]]:
        try:
            return fut.result(timeout=self.timeout_s)
        except FutureTimeout:
            return self._failed(env_name, "timeout", f"over {self.timeout_s}s")
        except Exception as err:  # researchers' code: any exception is a scoring error
            msg = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            kind = "non-finite" if "returned nan" in msg or "returned inf" in msg else type(err).__name__
            return self._failed(env_name, kind, msg)

    def score(
        self, env_name: str, env: Environment, rows: Sequence[Row], texts: Sequence[Sequence[str]]
    ) -> list[GroupScores]:
        """Score each completion of each group (rows[i] with its completions texts[i])."""
        futures = [
            [self._pool.submit(env.score, row, t) for t in group]
            for row, group in zip(rows, texts, strict=True)
        ]
        out = []
        for group in futures:
            before = sum(self.errors_by_kind.values())
            results = [self._result(env_name, f) for f in group]
            errored = sum(self.errors_by_kind.values()) - before
            out.append(GroupScores([r for r, _ in results], [p for _, p in results], errored))
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
