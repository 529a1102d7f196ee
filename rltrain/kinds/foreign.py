"""The foreign kind: an environment in its own interpreter (`[[env]] python = ".../bin/python"`), a classic
verifiers (0.1.x) one (envs/classic.py) or an rltrain one. Its rows, rewards, env_response and tools run
in worker processes of that interpreter (envs/foreign_worker.py), never in the trainer's venv; the
episodes are the native kind's (the first turns in one engine batch, the sampled tokens exact, the
environment's messages inserted and masked). Only the pool differs: each environment brings the pool
whose worker described it at load, and the runner routes calls to it by the environment's name."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from rltrain.config import EnvConfig, ScoringConfig
from rltrain.envs.foreign import ForeignEnvironment, PoolRouter, load_foreign
from rltrain.envs.loader import EnvironmentLoadError
from rltrain.envs.scoring import GroupScores, Scorer
from rltrain.envs.workers import EnvSpec, WorkerPool
from rltrain.kinds.base import Item, Kind, RunnerContext
from rltrain.kinds.native import NativeEnv, NativeRunner
from rltrain.rollout.episodes import Episode
from rltrain.types import SamplingParams

# the worker that describes an environment at load serves the run when the run keeps this default
DEFAULT_MEMORY_MB = ScoringConfig().memory_limit_mb


class ForeignEnv(NativeEnv):
    """A ForeignEnvironment (plain data, calls by name) and the pool of its interpreter."""

    kind = "foreign"

    def __init__(self, env: ForeignEnvironment, spec: EnvSpec, pool: WorkerPool) -> None:
        super().__init__(env, spec.id, spec.args)
        self.spec, self.pool = spec, pool
        weakref.finalize(self, pool.close)  # an environment that never played: its workers end with it

    def worker_spec(self, name: str) -> None:
        return None  # the run's workers are the trainer's interpreter; this one's are in `pool`

    def start_runner(self, ctx: RunnerContext) -> ForeignRunner:
        return ForeignRunner(ctx)

    def pool_for_run(self, size: int, memory_limit_mb: int) -> WorkerPool:
        """The pool at the run's size; a memory limit other than the describing worker's starts anew."""
        if memory_limit_mb != self.pool.memory_limit_mb:
            self.pool.close()
            self.pool = WorkerPool([self.spec], size, memory_limit_mb, python=self.pool.python)
        self.pool.size = size
        return self.pool


class ForeignRunner(NativeRunner):
    """The native runner, whose environment calls and reward calls go to each environment's own pool."""

    def __init__(self, ctx: RunnerContext) -> None:
        run = ctx.scorer
        self.router = PoolRouter([], {}, run.pool.size, run.pool.memory_limit_mb)
        self._routing = threading.Lock()  # a producer samples while the last batch is scored
        super().__init__(replace(ctx, scorer=Scorer(self.router, run.timeout_s, run.error_reward)))

    def _route(self, items: Sequence[Item]) -> None:
        with self._routing:
            for it in items:
                if it.slot.name not in self.router.by_env and isinstance(it.slot.env, ForeignEnv):
                    pool = it.slot.env.pool_for_run(self.router.size, self.router.memory_limit_mb)
                    self.router.add(it.slot.name, pool)

    def episodes(self, items: Sequence[Item], n: int, sampling: SamplingParams) -> list[list[Episode]]:
        self._route(items)
        return super().episodes(items, n, sampling)

    def score(self, items: Sequence[Item], groups: Sequence[list[Episode]]) -> list[GroupScores]:
        self._route(items)
        return super().score(items, groups)

    def close(self) -> None:
        super().close()
        self.ctx.scorer.close()  # this runner's own scorer: the environments' pools


def _load(entry: EnvConfig) -> ForeignEnv:
    assert entry.id is not None and entry.python is not None  # claims: an id and an interpreter
    python = str(Path(entry.python).expanduser().absolute())  # not resolved: a venv's python is a link
    if not Path(python).is_file():
        raise EnvironmentLoadError(
            f"environment {entry.label!r}: python {entry.python}: no such interpreter "
            "(`python -m rltrain envs venv NAME -- PACKAGE...` makes one and prints its path)"
        )
    spec = EnvSpec(entry.label, entry.id, entry.args)
    pool = WorkerPool([spec], 1, DEFAULT_MEMORY_MB, python=python)
    try:
        return ForeignEnv(load_foreign(spec, python, pool), spec, pool)
    except BaseException:
        pool.close()
        raise


KIND = Kind("foreign", claims=lambda entry: entry.python is not None and entry.id is not None, load=_load)
