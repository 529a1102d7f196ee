"""Where each step's rollouts come from: the `RolloutSource` protocol the loop draws from, the serial
source (sample, score, train, sync: one after the other); the producer that samples ahead is producer.py, and
setup.py's `make_source` picks one."""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from rltrain.distributed import Dist
from rltrain.orchestrator.adapter_sync import Adapter, AdapterSync
from rltrain.orchestrator.assemble import Rollouts
from rltrain.orchestrator.collect import Collector, PromptBatch
from rltrain.orchestrator.evals import EvalPlan, evaluate
from rltrain.orchestrator.prompts import PromptSampler
from rltrain.orchestrator.shares import StepRollouts, gather, share
from rltrain.rollout.prompting import Prompting
from rltrain.types import SamplingParams


@dataclass
class Batch:
    """One step's rollouts, ready to train on."""

    rollouts: StepRollouts
    position: dict[str, int]  # the prompt order after this batch: what a checkpoint after it saves
    version: int  # the adapter version (optimizer steps applied) the batch was sampled with
    wait_s: float = 0.0  # how long the trainer waited for it (async: the sampling not overlapped)
    sample_s: float = 0.0  # the engine's wall time sampling it (episodes, not their scoring)
    extra: dict[str, float] = field(default_factory=dict)  # the producer's own metrics (landed check)


@dataclass
class Pending:
    """A batch as a producer made it: this rank's share, still being scored; the trainer gathers the
    ranks when it takes the batch (`Pending.take`)."""

    mine: Future[Rollouts]  # scored on the scoring thread
    sampling: SamplingParams
    position: dict[str, int]
    version: int
    extra: dict[str, float] = field(default_factory=dict)
    sample_s: float = 0.0  # this rank's sampling wall time

    def take(self, dist: Dist) -> Batch:
        """Its scoring's result (or error), gathered over the ranks: a collective, on the trainer's thread."""
        rollouts = gather(self.mine.result(), self.sampling, dist)
        return Batch(rollouts, self.position, self.version, extra=self.extra, sample_s=self.sample_s)


class RolloutSource(Protocol):
    """What the loop draws each step's rollouts from, and hands each new adapter to."""

    position: dict[str, int]  # the prompt order after the last batch trained on (checkpointed)

    def next(self, step: int) -> Batch:
        """Step `step`'s batch (sampled now, or taken from those sampled ahead)."""
        ...

    def before_update(self, step: int) -> None:
        """Called before the update of `step`: a producer's bound may make it wait."""
        ...

    def consumed(self, batch: Batch) -> None:
        """`batch` was trained on: its position is what the next checkpoint saves."""
        ...

    def rewind(self) -> None:
        """A batch was drawn but not trained on (a stop request): resume draws the same prompts, or
        (sampling ahead) the stop's checkpoint keeps it in flight."""
        ...

    def restart(self) -> None:
        """Batches drawn and not trained on are dropped (a guard's rollback): the next draw takes the
        same prompts, sampled with the adapter published next."""
        ...

    def in_flight(self, step: int) -> list[Pending]:
        """The batches sampled ahead for the steps after `step` (none serially): a checkpoint keeps them."""
        ...

    def publish(self, step: int, adapter: Adapter) -> dict[str, float]:
        """The adapter after `step` reaches the engine (at once, or when the bound allows; after a
        rewind, at once); returns sync metrics."""
        ...

    def evaluate(self, plans: list[EvalPlan], sampling: SamplingParams) -> dict[str, float]:
        """Run evaluations on the engine with the newest adapter."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Draw:
    """What a source samples each step from: the prompt order, the collector, the sampling settings."""

    collector: Collector
    sampler: PromptSampler
    prompting: Prompting
    dist: Dist
    prompts_per_step: int

    def rows(self, step: int) -> tuple[PromptBatch, SamplingParams, dict[str, int]]:
        """This rank's share of step `step`'s prompts, its sampling settings, and the prompt order after."""
        batch = self.sampler.next_batch(step, self.prompts_per_step)
        rows, sampling = share(batch, self.prompting.sampling(step), self.dist)
        return rows, sampling, self.sampler.state_dict()

    def evaluate(self, plans: list[EvalPlan], sampling: SamplingParams) -> dict[str, float]:
        out: dict[str, float] = {}
        for plan in plans:
            out.update(evaluate(self.collector, plan, sampling))
        return out


class SerialSource:
    """Sample, score, train, sync: one after the other (max_async_level = 0)."""

    def __init__(self, draw: Draw, sync: AdapterSync) -> None:
        self.draw, self.sync = draw, sync
        self.position = draw.sampler.state_dict()

    def before_update(self, step: int) -> None:
        pass

    def next(self, step: int) -> Batch:
        rows, sampling, position = self.draw.rows(step)
        began = time.perf_counter()
        sampled = self.draw.collector.sample(rows, sampling)
        sample_s = time.perf_counter() - began
        mine = self.draw.collector.finish(sampled)
        version = self.draw.collector.backend.version
        return Batch(gather(mine, sampling, self.draw.dist), position, version, sample_s=sample_s)

    def rewind(self) -> None:
        self.draw.sampler.load_state_dict(self.position)

    def restart(self) -> None:
        self.rewind()

    def consumed(self, batch: Batch) -> None:
        self.position = batch.position

    def in_flight(self, step: int) -> list[Pending]:
        return []

    def publish(self, step: int, adapter: Adapter) -> dict[str, float]:
        out = self.sync.land(adapter)
        if self.sync.check_due(step) and not self.sync.backend.reads_live_weights:
            out |= self.sync.check()
        return out

    def evaluate(self, plans: list[EvalPlan], sampling: SamplingParams) -> dict[str, float]:
        return self.draw.evaluate(plans, sampling)

    def close(self) -> None:
        pass
