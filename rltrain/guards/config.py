"""`[[guards]]`: what each guard watches, where it fires and what it does; each signal's defaults."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from rltrain.config_sections import _Model

Signal = Literal[
    "truncation", "length_collapse", "repetition", "entropy", "mismatch_kl", "eval_divergence", "no_signal"
]
Action = Literal["warn", "stop", "rollback", "off"]
RANGES = {
    "truncation": (0.0, 1.0),
    "length_collapse": (0.0, 1.0),
    "repetition": (0.0, 1.0),
    "no_signal": (0.0, 1.0),
}
BASELINE_STEPS = 3  # the first steps with data set the reference that length and reward are compared with
# A run has solved its task when its reward rose REWARD_RISE above the first steps' and its whole batch
# scores the best reward any completion has had (within SOLVED_SLACK of that rise): equal groups (no_signal),
# low entropy and short answers (length_collapse) are then convergence, not failure
REWARD_RISE = 0.05
SOLVED_SLACK = 0.02
# truncation and repetition pay a hack, so they fire however high the reward; but a streak of them that
# begins when the reward already was within CONVERGED_SLACK of its rise from the best is a solved run
# collapsing onto one answer the reward already paid in full, not the reward paying for them. Measured
# on the tiny model: the demo (configs/demo.toml) reached reward 0.982 (best 1.0, first steps 0.22:
# 2.3% short) the step before it settled on " 665 665 ..." at max_tokens (repeat_frac 0.955, truncated
# 1.0); the reward paying repetition stood at 0.63 (best 1.0, first steps 0.14: 43% short) the step
# before its streak, and the one paying length at 0.76 (first steps 0.77, best 1.03: still rising)
CONVERGED_SLACK = 0.1
CONVERGED_OK = ("truncation", "repetition")


class GuardConfig(_Model):
    signal: Signal = Field(examples=["repetition"])
    """What is watched: truncation (share of completions cut at max_tokens), length_collapse (mean
    length against the first steps'), repetition (repeated word-trigram share), entropy (of the policy
    on the sampled tokens), mismatch_kl (trainer vs sampler), eval_divergence (train reward up while
    held-out eval is down), no_signal (every group's rewards equal, or every rollout errored)."""
    threshold: float | None = Field(None, examples=[0.5])
    """Where it fires (unset = the signal's default, in the README's guards table)."""
    window: int | None = Field(None, gt=0, examples=[3])
    """Steps in a row the condition must hold (eval_divergence: steps between the evals compared)."""
    action: Action = "warn"
    """warn: log it; stop: end the run; rollback: restore the last checkpoint that passed every guard,
    scale the learning rate by lr_factor and go on; off: not watched."""
    lr_factor: float = Field(0.5, gt=0.0, le=1.0)
    """rollback: the learning rate is multiplied by this at each rollback."""
    max_rollbacks: int = Field(2, gt=0)
    """rollback: after this many rollbacks by this guard, its next firing stops the run."""

    @model_validator(mode="after")
    def _threshold_in_range(self) -> GuardConfig:
        low, high = RANGES.get(self.signal, (0.0, math.inf))
        if self.threshold is not None and not low < self.threshold <= high:
            raise ValueError(
                f"threshold of {self.signal} must be in ({low:g}, {high:g}], got {self.threshold:g}"
            )
        return self


@dataclass(frozen=True)
class Default:
    metric: str  # the metrics-row key read
    threshold: float
    window: int
    above: bool  # fires at metric >= threshold (False: at <=)


DEFAULTS: dict[str, Default] = {
    "truncation": Default("truncated_frac", 0.9, 5, above=True),
    "length_collapse": Default("completion_len_mean", 0.25, 3, above=False),  # x the first steps' length
    "repetition": Default("repeat_frac", 0.5, 3, above=True),
    "entropy": Default("entropy", 0.01, 3, above=False),
    "mismatch_kl": Default("mismatch_kl", 0.05, 1, above=True),
    "eval_divergence": Default("reward_mean", 0.05, 10, above=True),  # both changes, in reward units
    "no_signal": Default("flat_group_frac", 1.0, 5, above=True),  # or errored_frac
}


@dataclass(frozen=True)
class Guard:
    """A config entry with its signal's defaults filled in."""

    signal: str
    metric: str
    threshold: float
    window: int
    above: bool
    action: str
    lr_factor: float = 0.5
    max_rollbacks: int = 2


def resolve(entries: Sequence[GuardConfig]) -> list[Guard]:
    """The guards a run watches: a warning per signal, except where entries name that signal (they
    replace its default; `action = "off"` drops it)."""
    named = {e.signal for e in entries}
    out = [Guard(s, d.metric, d.threshold, d.window, d.above, "warn") for s, d in DEFAULTS.items()]
    out = [g for g in out if g.signal not in named]
    for e in entries:
        d = DEFAULTS[e.signal]
        threshold = d.threshold if e.threshold is None else e.threshold
        window = e.window or d.window
        out.append(
            Guard(e.signal, d.metric, threshold, window, d.above, e.action, e.lr_factor, e.max_rollbacks)
        )
    return [g for g in out if g.action != "off"]
