"""The guards in the loop: each step's metrics row in; its events logged and recorded; the decision
(go on, stop, roll back) the same on every rank; a rollback carried out.

Evals run on the main rank only, so the main rank watches and decides and the other ranks take its
decision (one small collective a step, when distributed). A rollback restores the last good
checkpoint into the live policy (checkpoint.roll_back: its adapter and optimizer moments, the
learning rate scaled), drops what was sampled ahead with the abandoned weights, and hands the
restored adapter to the engine; the loop then checkpoints it at that step.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rltrain import checkpoint as ckpt
from rltrain.distributed import Dist
from rltrain.guards import Decision, GuardConfig, Guards
from rltrain.orchestrator.setup import Engine
from rltrain.orchestrator.sources import RolloutSource
from rltrain.recorder import Recorder

log = logging.getLogger("rltrain")


class LoopGuards:
    """A run's guards as the loop uses them; `stopped` holds the reason when one ended the run."""

    def __init__(self, entries: Sequence[GuardConfig], recorder: Recorder, ahead: int) -> None:
        self.guards = Guards.from_config(entries, lag=1 + ahead)  # rows show weights this much older
        self.dist: Dist = recorder.dist
        self.stopped: str | None = None
        # every event so far: the record's metrics keep them all ("guard_events"), a row only its own
        self.events: list[dict[str, Any]] = []
        self._recorder = recorder

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A resumed run's guards: from its checkpoint, when it has them (older ones start afresh)."""
        if "guards" in state:
            self.guards.load_state_dict(state["guards"])
            self._record(state.get("guard_events", []))

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: baselines, streaks, failed spans, rollbacks, the events so far."""
        return {"guards": self.guards.state_dict(), "guard_events": list(self.events)}

    def _record(self, events: list[dict[str, Any]]) -> None:
        self.events = [*self.events, *events]
        if self.events:
            self._recorder.run_metrics["guard_events"] = self.events

    def baseline(self, row: dict[str, Any]) -> None:
        """The base model's evals at step 0 (eval_divergence compares with them)."""
        if self.dist.is_main:
            self.guards.observe(0, row)

    def check(self, step: int, metrics: dict[str, Any], checkpoints: Sequence[str]) -> Decision:
        """Watch step `step`'s row and decide, on the main rank; every rank returns that decision. The
        events go into the row (under "guards", with "guard_decision" when one stops or rolls back)
        and into the log, one line each."""
        decision = Decision("go_on")
        if self.dist.is_main:
            events = self.guards.observe(step, metrics)
            for event in events:
                log.warning("%s", event.message)
            decision = self.guards.decide(events, checkpoints)
            if events:
                metrics["guards"] = [e.row() for e in events]
                self._record(metrics["guards"])
            if decision.action != "go_on":
                metrics["guard_decision"] = asdict(decision)
        decision = self.dist.from_main(decision)
        if decision.action == "stop":
            self.stopped = decision.reason
            if self.dist.is_main:
                log.warning("guards: stopping the run: %s", decision.reason)
        return decision

    def roll_back(self, decision: Decision, engine: Engine, source: RolloutSource, step: int) -> None:
        """The policy back to `decision.checkpoint` with its learning rate scaled; nothing sampled with
        the abandoned weights is trained on, and the engine samples with the restored ones."""
        assert decision.checkpoint is not None
        source.restart()
        lr = ckpt.roll_back(engine.policy, Path(decision.checkpoint), decision.lr_factor)
        source.publish(step, engine.sync.export(step))
        if self.dist.is_main:
            log.warning(
                "guards: rolled back to %s at step %d; learning rate now %.4g",
                Path(decision.checkpoint).name,
                step,
                lr,
            )

    def protect(self, checkpoints: Sequence[str]) -> list[Path]:
        """What pruning (keep_last) must keep, where a guard may roll back: `Guards.keep`."""
        if not any(g.action == "rollback" for g in self.guards.guards):
            return []
        return [Path(c) for c in self.guards.keep(checkpoints)]
