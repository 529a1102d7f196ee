"""Held-out evaluation: avg@k (mean reward) and pass@k (any of k completions scores >= threshold)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from rltrain.data import EnvSlot
from rltrain.envs.scoring import Scorer
from rltrain.rollout.backend import RolloutBackend
from rltrain.rollout.collect import PromptEncoder
from rltrain.types import SamplingParams

PASS_THRESHOLD = 0.999  # rewards are usually 0..1 correctness; "pass" means full marks


def evaluate(
    backend: RolloutBackend,
    encoder: PromptEncoder,
    slots: Sequence[EnvSlot],
    num_examples: int,
    k: int,
    sampling: SamplingParams,
    scorer: Scorer,
    prefix: str = "eval",
) -> dict[str, float]:
    """Per environment: `<prefix>/<env>/avg@k` and `<prefix>/<env>/pass@k` on its held-out rows."""
    out: dict[str, float] = {}
    sampling = replace(sampling, seed=(sampling.seed or 0) + 7_919)  # never the training draw
    for slot in slots:
        rows = (slot.env.eval_rows or slot.env.rows)[:num_examples]
        groups = backend.generate([encoder.encode(r.prompt) for r in rows], k, sampling)
        scored = scorer.score(slot.name, slot.env, rows, [[c.text for c in g.completions] for g in groups])
        rewards = [s.rewards for s in scored]
        n = max(len(rewards), 1)
        out[f"{prefix}/{slot.name}/avg@{k}"] = sum(sum(r) for r in rewards) / max(
            sum(len(r) for r in rewards), 1
        )
        out[f"{prefix}/{slot.name}/pass@{k}"] = sum(max(r) >= PASS_THRESHOLD for r in rewards) / n
    return out
