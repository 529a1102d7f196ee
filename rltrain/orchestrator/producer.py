"""Sampling ahead of training: a producer thread (`max_async_level` = k ≥ 1, prime's meaning: rollouts
used at step n were sampled with an adapter no older than step n − k).

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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from rltrain.orchestrator.adapter_sync import Adapter, AdapterSync
from rltrain.orchestrator.assemble import Rollouts
from rltrain.orchestrator.collect import Sampled
from rltrain.orchestrator.evals import EvalPlan
from rltrain.orchestrator.sources import Batch, Draw, Pending
from rltrain.types import SamplingParams


@dataclass
class EvalRequest:
    plans: list[EvalPlan]
    sampling: SamplingParams
    answer: queue.Queue[dict[str, float] | BaseException] = field(default_factory=lambda: queue.Queue(1))


@dataclass
class ProducerState:
    """Everything the producer holds between batches (guarded by AsyncSource._cond). What it has in
    flight is `published` (adapters not yet loaded) and `made` (batches not yet trained on, each sampled
    with `Pending.version`): a checkpoint keeps those batches (inflight.py) for a bit-exact resume."""

    published: dict[int, Adapter]  # versions the trainer published that the bound may still need
    loaded: int  # the version the engine holds
    taken: int  # the last step whose batch has its adapter (the trainer's gate)
    made: dict[int, Pending] = field(default_factory=dict)  # by step: batches not yet trained on
    produced: int = 0  # the last step whose batch was made
    requests: list[EvalRequest] = field(default_factory=list)
    stopping: bool = False
    failed: bool = False


class AsyncSource:
    """A producer thread samples up to `ahead` steps ahead of the trainer."""

    def __init__(
        self, draw: Draw, sync: AdapterSync, start: int, *, ahead: int, last: int, kept: list[Pending]
    ) -> None:
        """`kept`: the batches of steps start + 1... a checkpoint kept (inflight.py), trained on first."""
        self.draw, self.sync, self.ahead, self.last = draw, sync, ahead, last
        self.position = draw.sampler.state_dict()
        if kept:  # the producer draws on after the last batch kept
            draw.sampler.load_state_dict(kept[-1].position)
        self._cond = threading.Condition()
        self._rewound = False
        self._start(start, kept)  # the starting adapter was loaded by the first (serial) sync

    def _start(self, start: int, kept: Sequence[Pending] = ()) -> None:
        """A producer thread sampling the batches after `start` and those kept, from the adapter the
        engine holds; the kept ones are handed over first."""
        self.start = start  # the adapter the engine holds: no batch from here on is sampled with an older one
        up_to = start + len(kept)
        made = dict(enumerate(kept, start + 1))
        adapters = {start: Adapter(start)}
        self.state = ProducerState(adapters, loaded=start, taken=up_to, made=made, produced=up_to)
        self._step = start  # the step of the batch the trainer took last
        self._out: queue.Queue[Pending | BaseException] = queue.Queue(maxsize=self.ahead)
        for pending in kept:
            self._out.put_nowait(pending)
        # scoring a batch needs no engine: it runs here while the producer samples the next one
        self._scoring = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring")
        self._thread = threading.Thread(target=self._run, args=(up_to + 1,), name="producer", daemon=True)
        self._thread.start()

    # -- the trainer's side -------------------------------------------------------------------------

    def next(self, step: int) -> Batch:
        start = time.perf_counter()
        self._step = step
        item = self._out.get()
        if isinstance(item, BaseException):  # the producer's error, re-raised here
            raise item
        batch = item.take(self.draw.dist)  # its scoring, if still running; its error, if it failed
        batch.wait_s = time.perf_counter() - start
        return batch

    def consumed(self, batch: Batch) -> None:
        self.position = batch.position
        with self._cond:
            for step in [s for s in self.state.made if s <= self._step]:
                del self.state.made[step]

    def in_flight(self, step: int) -> list[Pending]:
        """The batches of the steps after `step` sampled with adapters older than its own (steps up to
        step + k): waits for the producer to have made them (they are what the next steps train on)."""
        s, goal = self.state, min(step + self.ahead, self.last)
        with self._cond:
            self._cond.wait_for(lambda: s.stopping or s.failed or s.produced >= goal)
            return [s.made[n] for n in range(step + 1, goal + 1) if n in s.made]

    def rewind(self) -> None:
        """The batch taken and not trained on stays in flight: the stop's checkpoint keeps it."""

    def restart(self) -> None:
        """Batches sampled ahead and not trained on are dropped and their prompts drawn again: the
        producer stops, and the next `publish` starts a new one from that adapter (a guard's rollback:
        nothing sampled with the abandoned weights is trained on)."""
        self.close()
        self.draw.sampler.load_state_dict(self.position)
        self._rewound = True

    def before_update(self, step: int) -> None:
        """The gate: the update of `step` waits until the batch of step + k has its adapter (the one
        after step - 1), so that no batch is ever sampled with a newer one than the bound says."""
        s = self.state
        with self._cond:
            goal = min(step + self.ahead, self.last)
            self._cond.wait_for(lambda: s.stopping or s.failed or s.taken >= goal)

    def publish(self, step: int, adapter: Adapter) -> dict[str, float]:
        """The trainer finished `step`: its adapter may reach the engine (the producer loads it)."""
        if self.sync.check_due(step):  # the trainer's probe now: its weights move on before the load
            adapter = self.sync.probed(adapter)
        if self._rewound:  # the engine takes it now, and a new producer samples from it
            self._rewound = False
            out = self.sync.land(adapter)
            self._start(step)
            return out
        with self._cond:
            self.state.published[step] = adapter
            self._cond.notify_all()
        return {}

    def evaluate(self, plans: list[EvalPlan], sampling: SamplingParams) -> dict[str, float]:
        """Run on the producer (it owns the engine), with the newest adapter, between two batches."""
        request = EvalRequest(plans, sampling)
        with self._cond:
            self.state.requests.append(request)
            self._cond.notify_all()
        result = request.answer.get()
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self) -> None:
        with self._cond:
            self.state.stopping = True
            self._cond.notify_all()
        while self._thread.is_alive():  # unblock a producer waiting to hand over a batch
            with contextlib.suppress(queue.Empty):
                self._out.get_nowait()
            self._thread.join(timeout=0.05)
        self._scoring.shutdown(cancel_futures=True)  # a batch in scoring ends before the engine closes

    # -- the producer's side ------------------------------------------------------------------------

    def _wait_for(self, version: int) -> bool:
        """Serve evaluations until the adapter `version` is published; False when stopping."""
        s = self.state
        while True:
            with self._cond:
                self._cond.wait_for(lambda: s.stopping or bool(s.requests) or version in s.published)
                if s.stopping:
                    return False
                ready = version in s.published
            self._serve_requests()
            if ready:
                return True

    def _serve_requests(self) -> None:
        while True:
            with self._cond:
                if not self.state.requests:
                    return
                request = self.state.requests.pop(0)
            self._load(max(self.state.published))  # the trainer waits: the newest adapter, to evaluate
            try:
                request.answer.put(self.draw.evaluate(request.plans, request.sampling))
            except BaseException as err:  # the trainer re-raises it
                request.answer.put(err)

    def _load(self, version: int) -> dict[str, float]:
        s = self.state
        with self._cond:
            adapter = s.published[version]
            for old in [v for v in s.published if v < version]:
                del s.published[old]  # never needed again: versions only move forward
        if adapter.version == s.loaded:
            return {}
        s.loaded = adapter.version
        return self.sync.land(adapter)

    def _finish(self, sampled: Sampled, extra: dict[str, float], began: float) -> Rollouts:
        """On the scoring thread: the batch scored (in order: one thread)."""
        out = self.draw.collector.finish(sampled)
        extra["produce_s"] = time.perf_counter() - began  # sampling and scoring, beside training
        return out

    def _put(self, item: Pending | BaseException) -> bool:
        while not self.state.stopping:
            try:
                self._out.put(item, timeout=0.05)
                return True
            except queue.Full:
                self._serve_requests()  # the trainer may be waiting on an evaluation
        return False

    def _produce(self, step: int) -> Pending | None:
        """Step `step`'s batch, sampled with the adapter the bound names; None when stopping."""
        version = max(step - 1 - self.ahead, self.start)  # the bound, exactly
        if not self._wait_for(version):
            return None
        extra = self._load(version)
        backend = self.draw.collector.backend
        backend.hold()  # a live-weights sampler snapshots them now: this batch's version
        with self._cond:
            self.state.taken = step
            self._cond.notify_all()
        began = time.perf_counter()
        try:
            rows, sampling, position = self.draw.rows(step)
            sampled = self.draw.collector.sample(rows, sampling)
        finally:
            backend.release()
        sample_s = time.perf_counter() - began
        scored = self._scoring.submit(self._finish, sampled, extra, began)
        pending = Pending(scored, sampling, position, backend.version, extra, sample_s)
        with self._cond:
            self.state.made[step] = pending
            self.state.produced = step
            self._cond.notify_all()
        return pending

    def _run(self, first: int) -> None:
        s = self.state
        try:
            for step in range(first, self.last + 1):
                pending = self._produce(step)
                if pending is None or not self._put(pending):
                    return
            while not s.stopping:  # the last batches are out: keep serving evaluations
                with self._cond:
                    self._cond.wait_for(lambda: s.stopping or bool(s.requests))
                self._serve_requests()
        except BaseException as err:  # the trainer re-raises it at its next batch
            with self._cond:
                s.failed = True
                self._cond.notify_all()
            self._put(err)
