"""Scored groups -> the trainer's `Sample`s: group-relative advantages, the zero-advantage filter, and
each episode's record."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rltrain.algo.advantages import group_advantages, is_zero_advantage
from rltrain.envs.scoring import GroupScores
from rltrain.orchestrator.metrics import episode_record
from rltrain.rollout.episodes import Episode
from rltrain.types import Sample


@dataclass(frozen=True)
class GroupSettings:
    size: int  # completions per prompt (rollouts_per_example)
    scale_rewards: bool  # divide advantages by the group's reward std
    drop_zero_advantage: bool  # the zero_advantage pre-batch filter


@dataclass
class Rollouts:
    samples: list[Sample]  # the groups kept for training
    records: list[dict[str, Any]]  # one per episode: what metrics and rollouts/step_N.jsonl need
    errored: Counter[str] = field(default_factory=Counter)  # failed scoring or episodes per environment
    filtered_groups: int = 0


def assemble(
    groups: Sequence[list[Episode]],
    scores: Sequence[GroupScores],
    env_names: Sequence[str],
    settings: GroupSettings,
    version: int,
) -> Rollouts:
    """Per group (of environment `env_names[i]`): advantages, kept or filtered, records and samples.
    `version`: the adapter the batch started from, for episodes whose engine reported none."""
    out = Rollouts([], [])
    for episodes, s, env in zip(groups, scores, env_names, strict=True):
        out.errored[env] += s.errored
        adv = group_advantages(s.rewards, scale=settings.scale_rewards)
        keep = not (settings.drop_zero_advantage and is_zero_advantage(adv))
        out.filtered_groups += not keep
        for ep, r, a, parts in zip(episodes, s.rewards, adv, s.parts, strict=True):
            out.records.append(episode_record(ep, r, a, parts))
            if keep:
                v = version if ep.version is None else ep.version
                for p in ep.parts:
                    out.samples.append(Sample(p.prompt_ids, p.ids, p.logprobs, p.mask, r, a, ep.group, v))
    return out
