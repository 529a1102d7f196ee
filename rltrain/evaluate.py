"""Held-out evaluation: avg@k (mean reward) and pass@k (any of k completions scores >= threshold),
and when `[eval]` / `[val]` run during training."""

from __future__ import annotations

from dataclasses import dataclass, replace

from rltrain.config import Config
from rltrain.rollout.collect import Collector
from rltrain.types import SamplingParams

PASS_THRESHOLD = 0.999  # rewards are usually 0..1 correctness; "pass" means full marks
EVAL_SEED_SHIFT = 7_919  # eval never draws the training samples


@dataclass(frozen=True)
class EvalSpec:
    num_examples: int  # held-out rows per environment
    k: int  # completions per row
    prefix: str = "eval"  # metric names: <prefix>/<env>/avg@k


def evaluate(collector: Collector, spec: EvalSpec, sampling: SamplingParams) -> dict[str, float]:
    """Per environment: `<prefix>/<env>/avg@k` and `<prefix>/<env>/pass@k` on its held-out rows."""
    out: dict[str, float] = {}
    sampling = replace(sampling, seed=(sampling.seed or 0) + EVAL_SEED_SHIFT)
    for index, slot in enumerate(collector.slots):
        rows = (slot.env.eval_rows or slot.env.rows)[: spec.num_examples]
        batch = [(index, r) for r in rows]
        rewards = [s.rewards for s in collector.score(batch, collector.episodes(batch, spec.k, sampling))]
        total = sum(len(r) for r in rewards)
        out[f"{spec.prefix}/{slot.name}/avg@{spec.k}"] = sum(sum(r) for r in rewards) / max(total, 1)
        passed = sum(max(r) >= PASS_THRESHOLD for r in rewards)
        out[f"{spec.prefix}/{slot.name}/pass@{spec.k}"] = passed / max(len(rewards), 1)
    return out


def due(cfg: Config, step: int) -> list[EvalSpec]:
    """The evaluations `[eval]` and `[val]` schedule after `step` (the hosted shape has both; locally
    both score held-out rows)."""
    out = []
    for prefix, section in (("eval", cfg.eval), ("val", cfg.val)):
        if section is not None and section.interval and step % section.interval == 0:
            out.append(EvalSpec(section.num_examples, section.rollouts_per_example, prefix))
    return out
