"""Scored groups -> the trainer's `Sample`s: group-relative advantages, the zero-advantage filter, and
each episode's record.

An episode that failed outside the model (`Episode.outside`: the engine, the worker pool, the
environment, a timeout) keeps its record but neither trains nor moves its group's baseline: advantages
are taken over the group's other episodes. A part with no sampled token is never a sample."""

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
        adv = _advantages(episodes, s.rewards, settings.scale_rewards)
        keep = not (settings.drop_zero_advantage and is_zero_advantage(adv))
        out.filtered_groups += not keep
        for ep, r, a, parts in zip(episodes, s.rewards, adv, s.parts, strict=True):
            out.records.append(episode_record(ep, r, a, parts))
            if keep and not ep.outside:
                v = version if ep.version is None else ep.version
                for p in ep.parts:
                    if any(p.mask):  # a prompt-only part (a split's last re-render) trains nothing
                        out.samples.append(Sample(p.prompt_ids, p.ids, p.logprobs, p.mask, r, a, ep.group, v))
    return out


def _advantages(episodes: Sequence[Episode], rewards: Sequence[float], scale: bool) -> list[float]:
    """Group-relative advantages over the episodes that count (0 for those failed outside the model)."""
    counted = [i for i, ep in enumerate(episodes) if not ep.outside]
    adv = group_advantages([rewards[i] for i in counted], scale=scale)
    out = [0.0] * len(rewards)
    for i, a in zip(counted, adv, strict=True):
        out[i] = a
    return out
