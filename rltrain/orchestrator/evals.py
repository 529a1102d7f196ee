"""Held-out evaluation: avg@k (mean reward) and pass@k (any of k completions scores >= threshold),
each with its 95% interval (rltrain/evalstats.py), and when `[eval]` / `[val]` run during training."""

from __future__ import annotations

from dataclasses import dataclass, replace

from rltrain.config import Config
from rltrain.envs.base import Row
from rltrain.evalstats import eval_metrics
from rltrain.kinds.base import EnvSlot
from rltrain.orchestrator.collect import Collector
from rltrain.types import SamplingParams

EVAL_SEED_SHIFT = 7_919  # eval never draws the training samples


@dataclass(frozen=True)
class EvalTarget:
    env_index: int  # into the collector's slots
    num_examples: int  # held-out rows
    k: int  # completions per row


@dataclass(frozen=True)
class EvalPlan:
    prefix: str  # metric names: <prefix>/<env>/avg@k
    targets: tuple[EvalTarget, ...]


def metric(prefix: str, env: str, stat: str, k: int) -> str:
    """An evaluation's metric name: `<prefix>/<env>/avg@k` or `.../pass@k`."""
    return f"{prefix}/{env}/{stat}@{k}"


def eval_rows(slot: EnvSlot, num_examples: int) -> list[Row]:
    """The held-out rows an evaluation takes (-1: all of them)."""
    return (slot.env.eval_rows or slot.env.rows)[: num_examples if num_examples >= 0 else None]


def target_rewards(collector: Collector, target: EvalTarget, sampling: SamplingParams) -> list[list[float]]:
    """The k rewards of each of the target's held-out rows. The seeds depend only on `sampling`, so two
    policies evaluated with the same `sampling` are compared on the same draws (`eval --compare`)."""
    sampling = replace(sampling, seed=(sampling.seed or 0) + EVAL_SEED_SHIFT)
    slot = collector.slots[target.env_index]
    batch = [(target.env_index, r) for r in eval_rows(slot, target.num_examples)]
    return [s.rewards for s in collector.score(batch, collector.episodes(batch, target.k, sampling))]


def evaluate(collector: Collector, plan: EvalPlan, sampling: SamplingParams) -> dict[str, float]:
    """Per environment: `<prefix>/<env>/avg@k` and `<prefix>/<env>/pass@k` on its held-out rows, each
    with its interval's bounds (`.../avg@k/lo`, `.../avg@k/hi`)."""
    out: dict[str, float] = {}
    for t in plan.targets:
        name = f"{plan.prefix}/{collector.slots[t.env_index].name}"
        out |= eval_metrics(name, target_rewards(collector, t, sampling), t.k)
    return out


def plans(cfg: Config, trained: int) -> list[EvalPlan]:
    """`[eval]` and `[val]` (the hosted shape has both; locally both score held-out rows). The first
    `trained` slots are the training environments; `[[eval.env]]` entries follow them, in order."""
    out = []
    for prefix, section in (("eval", cfg.eval), ("val", cfg.val)):
        if section is None:
            continue
        envs = getattr(section, "env", [])
        if envs:
            targets = tuple(
                EvalTarget(
                    trained + i,
                    e.num_examples or section.num_examples,
                    e.rollouts_per_example or section.rollouts_per_example,
                )
                for i, e in enumerate(envs)
            )
        else:
            targets = tuple(
                EvalTarget(i, section.num_examples, section.rollouts_per_example) for i in range(trained)
            )
        out.append(EvalPlan(prefix, targets))
    return out


def due(cfg: Config, step: int, trained: int) -> list[EvalPlan]:
    """The evaluations scheduled after `step`; step 0 is the base model's, before training."""
    out = []
    for plan in plans(cfg, trained):
        section = cfg.eval if plan.prefix == "eval" else cfg.val
        assert section is not None
        if step == 0:
            if (
                plan.prefix == "eval"
                and cfg.eval is not None
                and cfg.eval.interval
                and not cfg.eval.skip_first_step
            ):
                out.append(plan)
        elif section.interval and step % section.interval == 0:
            out.append(plan)
    return out
