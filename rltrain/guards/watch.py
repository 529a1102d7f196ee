"""The guards at work: each step's metrics in, events and a decision (go on, stop, roll back) out.

The loop hands each step's metrics row (eval keys included) to `Guards.observe`, which returns the
events that fired; `Guards.decide` turns them into go on, stop, or roll back to the last checkpoint
that passed every guard. Pure: no torch (restoring a checkpoint is checkpoint.roll_back).

Contract with the loop: step numbers never repeat. After a rollback the run goes on counting from
where it was (max_steps counts every update, rolled back or not); the abandoned steps are marked, so
that no checkpoint of theirs is ever "last good". `decide` runs before the step's own checkpoint, and
after a rollback the loop checkpoints the restored weights at that step (a resume then continues
from them, with the scaled learning rate and this state): that checkpoint counts as good.

A step's row shows weights older than that step's checkpoint: its rollouts were sampled with the
weights after step - 1 - max_async_level, and the trainer's entropy and mismatch are taken before
its update. So a streak whose first failing row is step s implicates every checkpoint from
s - `lag` on (lag = 1 + max_async_level), and a rollback goes to one before that.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from rltrain.guards.config import (
    BASELINE_STEPS,
    CONVERGED_OK,
    CONVERGED_SLACK,
    REWARD_RISE,
    SOLVED_SLACK,
    Guard,
    GuardConfig,
    resolve,
)
from rltrain.guards.events import Decision, Event

EVAL_KEY = re.compile(r"^(?:eval|val)/(?P<env>.+)/avg@\d+$")


@dataclass
class _State:
    streak: int = 0
    onset: int = 0
    fired: bool = False
    rollbacks: int = 0
    span: int = -1  # its failing streak's entry in Guards.bad, while the streak lasts
    first_bad: int = 0  # the oldest checkpoint step its streak implicates
    excused: bool = False  # truncation, repetition: the condition began once the run had converged


@dataclass(frozen=True)
class _Reading:
    holds: bool
    values: dict[str, float]
    onset: int | None = None  # where the condition began, when the guard knows better than its streak


def _number(row: dict[str, Any], key: str) -> float | None:
    v = row.get(key)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _excuse(g: Guard, st: _State, r: _Reading | None, converged: bool) -> _Reading | None:
    """Truncation or repetition that began when the run had already converged (config.py:
    CONVERGED_SLACK) does not count, for as long as it lasts: the reward did not pay for it."""
    if g.signal not in CONVERGED_OK or r is None:
        return r
    if not r.holds:
        st.excused = False
        return r
    if st.streak == 0:
        st.excused = st.excused or converged
    return _Reading(False, r.values) if st.excused else r


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


@dataclass
class Guards:
    """The guards of one run and what they have seen; `state_dict` goes into each checkpoint."""

    guards: list[Guard]
    lag: int = 1  # a row at step s shows the weights after step s - lag (1 + max_async_level) or later
    states: list[_State] = field(init=False)
    rewards: dict[str, dict[int, float]] = field(default_factory=dict)  # train reward keys -> step -> value
    evals: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # eval key -> (step, value)
    lengths: list[float] = field(default_factory=list)  # the first steps' mean completion lengths
    best: float | None = None  # the best reward any completion has had (reward_max; else reward_mean)
    bad: list[list[int]] = field(default_factory=list)  # [first, last] checkpoint steps a guard failed
    _fired: list[tuple[Event, int]] = field(default_factory=list)  # the last step's events, by guard
    _in_baseline: bool = True  # this step's length is one of the first steps' (the reference)

    def __post_init__(self) -> None:
        self.states = [_State() for _ in self.guards]

    @classmethod
    def from_config(cls, entries: Sequence[GuardConfig], lag: int = 1) -> Guards:
        return cls(resolve(entries), lag)

    def observe(self, step: int, row: dict[str, Any]) -> list[Event]:
        """Feed one step's metrics row (with any eval keys); returns the events that fired at it."""
        converged = self._solved(1, CONVERGED_SLACK)  # as of the step before this one
        self._remember(step, row)
        self._fired = []
        for i, (guard, st) in enumerate(zip(self.guards, self.states, strict=True)):
            reading = _excuse(guard, st, self._read(guard, step, row), converged)
            if reading is not None and (event := self._advance(guard, st, step, reading)) is not None:
                self._fired.append((event, i))
        for key, value in ((k, v) for k, v in row.items() if EVAL_KEY.match(k)):
            if isinstance(value, (int, float)):
                self.evals.setdefault(key, []).append((step, float(value)))
        return [e for e, _ in self._fired]

    def _remember(self, step: int, row: dict[str, Any]) -> None:
        for key in row:
            train = key == "reward_mean" or (key.startswith("env/") and key.endswith("/reward_mean"))
            if train and (v := _number(row, key)) is not None:
                self.rewards.setdefault(key, {})[step] = v
        best = _number(row, "reward_max")
        best = _number(row, "reward_mean") if best is None else best
        if best is not None:
            self.best = best if self.best is None else max(self.best, best)
        length = _number(row, "completion_len_mean")
        self._in_baseline = length is not None and len(self.lengths) < BASELINE_STEPS
        if length is not None and self._in_baseline:
            self.lengths.append(length)

    def _read(self, g: Guard, step: int, row: dict[str, Any]) -> _Reading | None:
        """The guard's condition at this step; None: nothing to judge (no data, or no baseline yet)."""
        if g.signal == "eval_divergence":
            return self._divergence(g, step, row)
        if g.signal == "no_signal":
            return self._no_signal(g, step, row)
        if g.signal in ("entropy", "mismatch_kl") and _number(row, "training_tokens") == 0.0:
            return None  # nothing was trained on: the trainer's averages are 0 / 0
        if g.signal == "mismatch_kl" and (_number(row, "staleness_max") or 0.0) > 0.0:
            # samples drawn k adapter versions ago: the KL is mostly the policy's own k updates, which a
            # healthy run makes large (the demo one step ahead: 0.06 to 2.45), not the engine's mismatch
            return None
        v = _number(row, g.metric)
        if v is None:
            return None
        if g.signal == "length_collapse":
            if self._in_baseline:  # a step that sets the reference is not judged against it
                return None
            start = _mean(self.lengths)
            holds = v <= g.threshold * start and not self._solved(g.window)
            return _Reading(holds, {g.metric: v, "first_steps_mean": start})
        holds = v >= g.threshold if g.above else v <= g.threshold
        if g.signal == "entropy":  # a policy sure of answers that all score the best is converged
            holds = holds and not self._solved(g.window)
        return _Reading(holds, {g.metric: v})

    def _solved(self, window: int, slack: float = SOLVED_SLACK) -> bool:
        """The run has learned its task (config.py: REWARD_RISE, SOLVED_SLACK): the last `window` steps'
        reward rose above the first steps', and the latest step's batch all scores the best reward seen
        (within `slack` of the rise)."""
        rewards = self.rewards.get("reward_mean", {})  # in step order: steps only grow
        if len(rewards) <= BASELINE_STEPS or self.best is None:
            return False
        start = _mean(list(islice(rewards.values(), BASELINE_STEPS)))
        recent = list(islice(reversed(rewards.values()), window))
        return _mean(recent) > start + REWARD_RISE and recent[0] >= self.best - slack * (self.best - start)

    def _no_signal(self, g: Guard, step: int, row: dict[str, Any]) -> _Reading | None:
        flat, errored = _number(row, "flat_group_frac"), _number(row, "errored_frac")
        if flat is None and errored is None:
            return None
        values = {"flat_group_frac": flat or 0.0, "errored_frac": errored or 0.0}
        if values["errored_frac"] >= g.threshold:
            return _Reading(True, values)
        # every group agrees because the run learned its task: not a failure
        return _Reading(values["flat_group_frac"] >= g.threshold and not self._solved(g.window), values)

    def _divergence(self, g: Guard, step: int, row: dict[str, Any]) -> _Reading | None:
        """At an eval: the train reward rose and this eval fell, each by `threshold`, since the latest
        eval at least `window` steps before."""
        readings = []
        for key, value in row.items():
            m = EVAL_KEY.match(key)
            earlier = [p for p in self.evals.get(key, []) if p[0] <= step - g.window]
            if m is None or not isinstance(value, (int, float)) or not earlier:
                continue
            then_step, then_eval = earlier[-1]
            train_key = f"env/{m['env']}/reward_mean"
            series = self.rewards.get(train_key) or self.rewards.get("reward_mean", {})
            pts = [series[s] for s in sorted(series) if then_step < s <= step]
            if len(pts) < 2:
                continue
            half = len(pts) // 2
            train_up, eval_down = _mean(pts[-half:]) - _mean(pts[:half]), then_eval - float(value)
            values = {"train_reward_change": train_up, f"{key}_change": -eval_down}
            holds = train_up >= g.threshold and eval_down >= g.threshold
            readings.append(_Reading(holds, values, then_step + 1))  # the earlier eval's weights were fine
        return next((r for r in readings if r.holds), readings[0] if readings else None)

    def _advance(self, g: Guard, st: _State, step: int, r: _Reading) -> Event | None:
        """A streak of steps where the condition holds; the guard fires once per streak, at `window`
        steps (eval_divergence at once: its window is the distance between the evals)."""
        if not r.holds:
            st.streak, st.fired, st.span = 0, False, -1
            return None
        st.streak += 1
        if st.streak == 1:
            st.onset = step if r.onset is None else r.onset
            st.first_bad = step - self.lag if r.onset is None else r.onset
        if st.fired:
            self.bad[st.span][1] = step
            return None
        if st.streak < (1 if g.signal == "eval_divergence" else g.window):
            return None
        st.fired, st.span = True, len(self.bad)
        self.bad.append([st.first_bad, step])
        return Event(g.signal, step, st.onset, g.action, r.values, g.threshold, g.window)

    def last_good(self, checkpoints: Sequence[str | Path], before: int | None = None) -> str | None:
        """The newest checkpoint (…/step_N) that passed every guard: no guard's failing streak covers
        its step, it is older than `before`, and it is not on a branch a rollback abandoned."""
        good = []
        for c in checkpoints:
            name = Path(c).name
            if not name.startswith("step_") or not name[5:].isdigit():
                continue
            n = int(name[5:])
            if (before is None or n < before) and not any(a <= n <= b for a, b in self.bad):
                good.append((n, str(c)))
        return max(good)[1] if good else None

    def keep(self, checkpoints: Sequence[str | Path]) -> list[str]:
        """The checkpoints a rollback may need (pruning must keep them): the newest that passed every
        guard, and the newest before any failing streak under way (its guard fires at `window`)."""
        under_way = [s.first_bad for s in self.states if s.streak and not s.fired]
        befores = [None, min(under_way)] if under_way else [None]
        return sorted({c for b in befores if (c := self.last_good(checkpoints, before=b)) is not None})

    def decide(self, events: Sequence[Event], checkpoints: Sequence[str | Path]) -> Decision:
        """Stop, roll back or go on, given a step's events and the run's complete checkpoints."""
        stop = next((e for e in events if e.action == "stop"), None)
        if stop is not None:
            return Decision("stop", stop.message)
        fired = [(e, i) for e, i in self._fired if e.action == "rollback" and e in events]
        if not fired:
            return Decision("go_on")
        event, i = fired[0]
        guard, st = self.guards[i], self.states[i]
        if st.rollbacks >= guard.max_rollbacks:
            return Decision("stop", f"{event.message}; already rolled back {st.rollbacks} times")
        target = self.last_good(checkpoints, before=st.first_bad)
        if target is None:
            why = f"no checkpoint before step {st.first_bad} passed every guard"
            return Decision("stop", f"{event.message}; {why}")
        st.rollbacks += 1
        restored = int(Path(target).name[5:])
        # from here on this step's weights are the restored ones (the loop checkpoints them): only the
        # steps before it failed, and those since the restored checkpoint are an abandoned branch
        for span in self.bad:
            span[1] = min(span[1], event.step - 1)
        self.bad.append([restored + 1, event.step - 1])
        for s in self.states:  # the restored policy starts every streak afresh
            s.streak, s.fired, s.span, s.excused = 0, False, -1, False
        reason = f"{event.message}; rollback {st.rollbacks}/{guard.max_rollbacks} to {Path(target).name}"
        return Decision("rollback", reason, target, guard.lr_factor)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps, so that a resumed run remembers its baselines and rollbacks."""
        return {
            "states": [asdict(s) for s in self.states],
            "rewards": {k: dict(v) for k, v in self.rewards.items()},
            "evals": {k: list(v) for k, v in self.evals.items()},
            "lengths": list(self.lengths),
            "best": self.best,
            "bad": [list(b) for b in self.bad],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["states"]) == len(self.states):  # the same guards (a changed config starts afresh)
            self.states = [_State(**s) for s in state["states"]]
        self.rewards = {k: {int(s): float(v) for s, v in d.items()} for k, d in state["rewards"].items()}
        self.evals = {k: [(int(s), float(v)) for s, v in pts] for k, pts in state["evals"].items()}
        self.lengths = [float(x) for x in state["lengths"]]
        self.best = state.get("best")
        self.bad = [[int(a), int(b)] for a, b in state["bad"]]
