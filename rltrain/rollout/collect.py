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
    records: list[dict[str, Any]]  # one per completion: what metrics and rollouts/step_N.jsonl need
    errored: dict[str, int] = field(default_factory=dict)  # scoring failures per environment
    filtered_groups: int = 0


def _score(
    groups: Sequence[Group], slots: Sequence[EnvSlot], batch: Sequence[tuple[int, Row]], scorer: Scorer
) -> tuple[list[list[float]], list[list[dict[str, float]]], dict[str, int]]:
    rewards: list[list[float]] = [[] for _ in groups]
    parts: list[list[dict[str, float]]] = [[] for _ in groups]
    errored: dict[str, int] = {}
    for env_index, slot in enumerate(slots):
        idx = [i for i, (e, _) in enumerate(batch) if e == env_index]
        if not idx:
            continue
        texts = [[c.text for c in groups[i].completions] for i in idx]
        scored = scorer.score(slot.name, slot.env, [batch[i][1] for i in idx], texts)
        for i, s in zip(idx, scored, strict=True):
            rewards[i], parts[i] = s.rewards, s.parts
            errored[slot.name] = errored.get(slot.name, 0) + s.errored
    return rewards, parts, errored


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
    """Sample a group per row, score it, and turn the kept groups into `Sample`s."""
    groups = backend.generate([encoder.encode(row.prompt) for _, row in batch], n, sampling)
    rewards_by_group, parts_by_group, errored = _score(groups, slots, batch, scorer)
    out = Rollouts([], [], errored)
    for gi, (group, rewards) in enumerate(zip(groups, rewards_by_group, strict=True)):
        adv = group_advantages(rewards, scale=scale_rewards)
        keep = not (drop_zero_advantage and is_zero_advantage(adv))
        out.filtered_groups += not keep
        for c, r, a, parts in zip(group.completions, rewards, adv, parts_by_group[gi], strict=True):
            out.records.append(
                {
                    "group": sampling.seed_offset + gi,
                    "env": slots[batch[gi][0]].name,
                    "completion": c.text,
                    "reward": r,
                    "advantage": a,
                    "parts": parts,
                    "finish": c.finish_reason,
                    "prompt_tokens": len(group.prompt_ids),
                    "completion_tokens": len(c.token_ids),
                }
            )
            if keep:
                out.samples.append(
                    Sample(
                        group.prompt_ids,
                        c.token_ids,
                        c.logprobs,
                        [1] * len(c.token_ids),
                        r,
                        a,
                        group_id=sampling.seed_offset + gi,
                    )
                )
    return out


def rollout_metrics(
    records: Sequence[dict[str, Any]], errored: dict[str, int], filtered: int
) -> dict[str, float]:
    """Step metrics from every completion's record (all ranks' records, when distributed)."""
    rewards = [r["reward"] for r in records]
    n = max(len(rewards), 1)
    mean = sum(rewards) / n
    out = {
        "reward_mean": mean,
        "reward_std": (sum((r - mean) ** 2 for r in rewards) / n) ** 0.5,
        "completion_len_mean": sum(r["completion_tokens"] for r in records) / n,
        "truncated_frac": sum(r["finish"] == "length" for r in records) / n,
        "errored_rollouts": float(sum(errored.values())),
        "filtered_groups": float(filtered),
        "input_tokens": float(sum(r["prompt_tokens"] for r in records)),
        "output_tokens": float(sum(r["completion_tokens"] for r in records)),
    }
    for name in sorted({r["env"] for r in records}):
        mine = [r["reward"] for r in records if r["env"] == name]
        out[f"env/{name}/reward_mean"] = sum(mine) / len(mine)
        out[f"env/{name}/errored_rollouts"] = float(errored.get(name, 0))
    return out
