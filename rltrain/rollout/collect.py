"""Rows -> prompts -> groups of completions -> scored `Sample`s (the trainer's only input)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rltrain.algo.advantages import group_advantages, is_zero_advantage
from rltrain.data import EnvSlot
from rltrain.envs.base import Row
from rltrain.envs.scoring import Scorer
from rltrain.rollout.backend import RolloutBackend
from rltrain.types import Group, Sample, SamplingParams


class PromptEncoder:
    """Chat messages -> token ids through the tokenizer's chat template (with its switches)."""

    def __init__(self, tokenizer: Any, template_kwargs: dict[str, Any]) -> None:
        self.tokenizer = tokenizer
        self.template_kwargs = template_kwargs

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **self.template_kwargs
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class Rollouts:
    samples: list[Sample]  # the groups kept for training
    groups: list[Group]
    rewards: list[float]  # every completion's reward (filtered groups included)
    env_names: list[str]  # per group
    metrics: dict[str, float] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)  # for rollouts/step_N.jsonl


def collect(
    backend: RolloutBackend,
    encoder: PromptEncoder,
    slots: Sequence[EnvSlot],
    batch: Sequence[tuple[int, Row]],
    n: int,
    sampling: SamplingParams,
    scorer: Scorer,
    scale_rewards: bool,
    drop_zero_advantage: bool,
) -> Rollouts:
    prompts = [encoder.encode(row.prompt) for _, row in batch]
    groups = backend.generate(prompts, n, sampling)
    rewards_by_group: list[list[float]] = [[] for _ in groups]
    parts_by_group: list[list[dict[str, float]]] = [[] for _ in groups]
    errored: dict[str, int] = {}
    for env_index, slot in enumerate(slots):
        idx = [i for i, (e, _) in enumerate(batch) if e == env_index]
        if not idx:
            continue
        texts = [[c.text for c in groups[i].completions] for i in idx]
        scored = scorer.score(slot.name, slot.env, [batch[i][1] for i in idx], texts)
        for i, s in zip(idx, scored, strict=True):
            rewards_by_group[i], parts_by_group[i] = s.rewards, s.parts
            errored[slot.name] = errored.get(slot.name, 0) + s.errored
    samples: list[Sample] = []
    records: list[dict[str, Any]] = []
    filtered = 0
    for gi, (group, rewards) in enumerate(zip(groups, rewards_by_group, strict=True)):
        adv = group_advantages(rewards, scale=scale_rewards)
        keep = not (drop_zero_advantage and is_zero_advantage(adv))
        filtered += not keep
        for c, r, a, parts in zip(group.completions, rewards, adv, parts_by_group[gi], strict=True):
            records.append(
                {
                    "group": gi,
                    "env": slots[batch[gi][0]].name,
                    "completion": c.text,
                    "reward": r,
                    "advantage": a,
                    "parts": parts,
                    "finish": c.finish_reason,
                }
            )
            if keep:
                samples.append(
                    Sample(
                        group.prompt_ids, c.token_ids, c.logprobs, [1] * len(c.token_ids), r, a, group_id=gi
                    )
                )
    flat = [r for rs in rewards_by_group for r in rs]
    metrics = _metrics(groups, flat, [slots[e].name for e, _ in batch], rewards_by_group, errored, filtered)
    return Rollouts(samples, groups, flat, [slots[e].name for e, _ in batch], metrics, records)


def _metrics(
    groups: Sequence[Group],
    rewards: Sequence[float],
    env_names: Sequence[str],
    rewards_by_group: Sequence[Sequence[float]],
    errored: dict[str, int],
    filtered: int,
) -> dict[str, float]:
    n = max(len(rewards), 1)
    mean = sum(rewards) / n
    lengths = [len(c.token_ids) for g in groups for c in g.completions]
    out = {
        "reward_mean": mean,
        "reward_std": (sum((r - mean) ** 2 for r in rewards) / n) ** 0.5,
        "completion_len_mean": sum(lengths) / max(len(lengths), 1),
        "truncated_frac": sum(c.finish_reason == "length" for g in groups for c in g.completions) / n,
        "errored_rollouts": float(sum(errored.values())),
        "filtered_groups": float(filtered),
        "input_tokens": float(sum(len(g.prompt_ids) * len(g.completions) for g in groups)),
        "output_tokens": float(sum(lengths)),
    }
    for name in sorted(set(env_names)):
        rs = [r for e, g in zip(env_names, rewards_by_group, strict=True) if e == name for r in g]
        out[f"env/{name}/reward_mean"] = sum(rs) / max(len(rs), 1)
        out[f"env/{name}/errored_rollouts"] = float(errored.get(name, 0))
    return out
