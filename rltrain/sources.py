"""Where each step's rollouts come from: sampled in the step (serial), or ahead of it by a producer
thread (`max_async_level` = k ≥ 1, prime's meaning: rollouts used at step n were sampled with an
adapter no older than step n − k).

The bound is kept strictly, which makes runs reproducible: the batch of step s is sampled with
exactly the adapter after step s − 1 − k (the first batches with the starting one). The producer
loads (or, reading the trainer's live weights, snapshots) that version before it samples, and the
trainer does not apply the update of step s − k before the producer has taken it.

The producer owns the engine: it loads each new adapter version the trainer publishes, samples the
next batches while the trainer trains, and runs the evaluations the trainer asks for. A batch's
scoring needs no engine, so it runs on a scoring thread while the producer samples the next batch: a
judge, a sandbox or a slow reward then waits beside sampling instead of after it (bench_async). It
never starts a batch before the trainer has published the adapter the bound requires, and it runs
at most k batches ahead. It runs no collective: every rank's producer works on its own share, and the
trainer thread gathers the shares when it consumes a batch, so collectives keep one order per rank.

A thread, not a process: measured on this 2-core CPU, the producer's time is the engine's (torch and
vLLM release the GIL in their kernels) and environment waits (judges, sandboxes, tools; in worker
processes already); a process would need the engine in another process and the adapter handed over by
file, as vLLM's own AsyncLLM does (14-52 s to start here, against 4.6 s in process).

Of vLLM 0.32's RL controls, the weight versions are used: the producer labels each adapter it loads
(`update_weight_version`), and every completion carries the label vLLM reports for its tokens, which is
the version a sample is trained as. Pause/resume and abort are not: the producer loads adapters only
between its own batches, so no request is ever in flight across a version change to pause or abort.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rltrain.config import Config
from rltrain.data import PromptSampler
from rltrain.distributed import Dist
from rltrain.evaluate import EvalPlan, evaluate
from rltrain.rollout.collect import Batch as CollectBatch
from rltrain.rollout.collect import Collector, Rollouts, Sampled, StepRollouts, gather
from rltrain.rollout.prompting import Prompting
from rltrain.types import SamplingParams


@dataclass
class Batch:
    """One step's rollouts, ready to train on."""

    rollouts: StepRollouts
    position: dict[str, int]  # the prompt order after this batch: what a checkpoint after it saves
    version: int  # the adapter version (optimizer steps applied) the batch was sampled with
    wait_s: float = 0.0  # how long the trainer waited for it (async: the sampling not overlapped)
    extra: dict[str, float] = field(default_factory=dict)  # the producer's own metrics (landed check)


@dataclass(frozen=True)
class Parts:
    """What a source works with."""

    cfg: Config
    collector: Collector
    sampler: PromptSampler
    prompting: Prompting
    dist: Dist


def _rows(parts: Parts, step: int) -> tuple[CollectBatch, SamplingParams, dict[str, int]]:
    """This rank's share of step `step`'s prompts, its sampling settings, and the prompt order after."""
    batch = parts.sampler.next_batch(step, parts.cfg.prompts_per_step)
    start, stop = parts.dist.shard(len(batch))
    sampling = parts.prompting.sampling(step).with_offset(start)
    return batch[start:stop], sampling, parts.sampler.state_dict()


def _draw(parts: Parts, step: int) -> tuple[Rollouts, SamplingParams, dict[str, int]]:
    """This rank's share of step `step`'s prompts, sampled and scored (no collective)."""
    rows, sampling, position = _rows(parts, step)
    return parts.collector.collect(rows, sampling), sampling, position


class SerialSource:
    """Sample, score, train, sync: one after the other (max_async_level = 0)."""

    def __init__(self, parts: Parts, sync: Callable[[int], dict[str, float]]) -> None:
        self.parts, self.sync = parts, sync
        self.position = parts.sampler.state_dict()

    def before_update(self, step: int) -> None:
        pass

    def next(self, step: int) -> Batch:
        mine, sampling, position = _draw(self.parts, step)
        return Batch(gather(mine, sampling, self.parts.dist), position, self.parts.collector.backend.version)

    def rewind(self) -> None:
        """A batch was drawn but not trained on (a stop request): resume draws the same prompts."""
        self.parts.sampler.load_state_dict(self.position)

    def consumed(self, batch: Batch) -> None:
        self.position = batch.position

    def published(self, step: int) -> dict[str, float]:
        return self.sync(step)

    def evaluate(self, plans: list[EvalPlan], sampling: SamplingParams) -> dict[str, float]:
        out: dict[str, float] = {}
        for plan in plans:
            out.update(evaluate(self.parts.collector, plan, sampling))
        return out

    def close(self) -> None:
        pass


@dataclass
class Adapter:
    """A published adapter version: its files (None: the backend reads the trainer's live weights) and,
    when a landed check is due, the trainer's logprobs of the probe at that version."""

    version: int
    path: Any = None
    probe: list[float] | None = None


class AsyncSource:
    """A producer thread samples up to `max_async_level` steps ahead of the trainer."""

    def __init__(self, parts: Parts, start: int, load: Callable[[Adapter], dict[str, float]]) -> None:
        self.parts, self.load = parts, load
        self.ahead = parts.cfg.async_level
        self.position = parts.sampler.state_dict()
        self._out: queue.Queue[Batch | BaseException] = queue.Queue(maxsize=self.ahead)
        self._cond = threading.Condition()
        self._published: dict[int, Adapter] = {start: Adapter(start)}  # loaded by the first (serial) sync
        self._loaded = start
        self._taken = start  # the last step whose batch has its adapter (the trainer's gate)
        self._requests: list[tuple[list[EvalPlan], SamplingParams, queue.Queue[Any]]] = []
        self._stopping = False
        self._failed = False
        # scoring a batch needs no engine: it runs here while the producer samples the next one
        self._scoring = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring")
        self._thread = threading.Thread(target=self._run, args=(start + 1,), name="producer", daemon=True)
        self._thread.start()

    # -- the trainer's side -------------------------------------------------------------------------

    def next(self, step: int) -> Batch:
        start = time.perf_counter()
        item = self._out.get()
        if isinstance(item, BaseException):
            raise item
        pending: _Pending = item.rollouts  # type: ignore[assignment]
        mine = pending.mine.result()  # its scoring, if still running; its error, if it failed
        item.wait_s = time.perf_counter() - start
        item.rollouts = gather(mine, pending.sampling, self.parts.dist)  # on this thread: in order
        return item

    def consumed(self, batch: Batch) -> None:
        self.position = batch.position

    def rewind(self) -> None:
        """Batches sampled ahead and not trained on are dropped: resume draws their prompts again."""

    def before_update(self, step: int) -> None:
        """The gate: the update of `step` waits until the batch of step + k has its adapter (the one
        after step - 1), so that no batch is ever sampled with a newer one than the bound says."""
        with self._cond:
            last = self.parts.cfg.max_steps
            self._cond.wait_for(
                lambda: self._stopping or self._failed or self._taken >= min(step + self.ahead, last)
            )

    def published(self, adapter: Adapter) -> dict[str, float]:
        """The trainer finished a step: its adapter may reach the engine (the producer loads it)."""
        with self._cond:
            self._published[adapter.version] = adapter
            self._cond.notify_all()
        return {}

    def evaluate(self, plans: list[EvalPlan], sampling: SamplingParams) -> dict[str, float]:
        """Run on the producer (it owns the engine), with the newest adapter, between two batches."""
        answer: queue.Queue[Any] = queue.Queue(maxsize=1)
        with self._cond:
            self._requests.append((plans, sampling, answer))
            self._cond.notify_all()
        result = answer.get()
        if isinstance(result, BaseException):
            raise result
        return result  # type: ignore[no-any-return]

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        while self._thread.is_alive():  # unblock a producer waiting to hand over a batch
            with contextlib.suppress(queue.Empty):
                self._out.get_nowait()
            self._thread.join(timeout=0.05)
        self._scoring.shutdown(cancel_futures=True)  # a batch in scoring ends before the engine closes

    # -- the producer's side ------------------------------------------------------------------------

    def _wait_for(self, version: int) -> bool:
        """Serve evaluations until the adapter `version` is published; False when stopping."""
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._stopping or bool(self._requests) or version in self._published
                )
                if self._stopping:
                    return False
                ready = version in self._published
            self._serve_requests()
            if ready:
                return True

    def _serve_requests(self) -> None:
        while True:
            with self._cond:
                if not self._requests:
                    return
                plans, sampling, answer = self._requests.pop(0)
            self._load(max(self._published))  # the trainer waits: the newest adapter, to evaluate
            try:
                out: dict[str, float] = {}
                for plan in plans:
                    out.update(evaluate(self.parts.collector, plan, sampling))
                answer.put(out)
            except BaseException as err:  # the trainer re-raises it
                answer.put(err)

    def _load(self, version: int) -> dict[str, float]:
        with self._cond:
            adapter = self._published[version]
            for old in [v for v in self._published if v < version]:
                del self._published[old]  # never needed again: versions only move forward
        if adapter.version == self._loaded:
            return {}
        self._loaded = adapter.version
        return self.load(adapter)

    def _finish(self, sampled: Sampled, extra: dict[str, float], began: float) -> Rollouts:
        """On the scoring thread: the batch scored (in order: one thread)."""
        out = self.parts.collector.finish(sampled)
        extra["produce_s"] = time.perf_counter() - began  # sampling and scoring, beside training
        return out

    def _put(self, item: Batch | BaseException) -> bool:
        while not self._stopping:
            try:
                self._out.put(item, timeout=0.05)
                return True
            except queue.Full:
                self._serve_requests()  # the trainer may be waiting on an evaluation
        return False

    def _run(self, first: int) -> None:
        try:
            backend = self.parts.collector.backend
            for step in range(first, self.parts.cfg.max_steps + 1):
                version = max(step - 1 - self.ahead, first - 1)  # the bound, exactly
                if not self._wait_for(version):
                    return
                extra = self._load(version)
                backend.hold()  # a live-weights sampler snapshots them now: this batch's version
                with self._cond:
                    self._taken = step
                    self._cond.notify_all()
                began = time.perf_counter()
                try:
                    rows, sampling, position = _rows(self.parts, step)
                    sampled = self.parts.collector.sample(rows, sampling)
                finally:
                    backend.release()
                version = backend.version
                scored = self._scoring.submit(self._finish, sampled, extra, began)
                if not self._put(Batch(_Pending(scored, sampling), position, version, extra=extra)):  # type: ignore[arg-type]
                    return
            while not self._stopping:  # the last batches are out: keep serving evaluations
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping or bool(self._requests))
                self._serve_requests()
        except BaseException as err:  # the trainer re-raises it at its next batch
            with self._cond:
                self._failed = True
                self._cond.notify_all()
            self._put(err)


@dataclass
class _Pending:
    """A batch as the producer made it: this rank's share only; the trainer gathers the ranks."""

    mine: Future[Rollouts]  # scored on the scoring thread
    sampling: SamplingParams
