"""Rows -> prompts -> groups of completions -> scored `Sample`s (the trainer's only input)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rltrain.algo.advantages import group_advantages, is_zero_advantage
from rltrain.data import EnvSlot
from rltrain.distributed import Dist
from rltrain.envs.base import Row
from rltrain.envs.scoring import GroupScores, Scorer
from rltrain.rollout.backend import RolloutBackend
from rltrain.rollout.prompting import PromptEncoder
from rltrain.types import Group, Sample, SamplingParams


@dataclass(frozen=True)
class GroupSettings:
    size: int  # completions per prompt (rollouts_per_example)
    scale_rewards: bool  # divide advantages by the group's reward std
    drop_zero_advantage: bool  # the zero_advantage pre-batch filter


@dataclass
class Rollouts:
    samples: list[Sample]  # the groups kept for training
    records: list[dict[str, Any]]  # one per completion: what metrics and rollouts/step_N.jsonl need
    errored: Counter[str] = field(default_factory=Counter)  # scoring failures per environment
    filtered_groups: int = 0


@dataclass
class StepRollouts:
    """One step's rollouts: this rank's samples, and what every rank's share adds up to."""

    mine: Rollouts
    records: list[dict[str, Any]]  # every rank's records, in rank order
    metrics: dict[str, float]
    sampling: SamplingParams


@dataclass
class Collector:
    """Samples and scores groups for rows of the run's environments."""

    backend: RolloutBackend
    encoder: PromptEncoder
    slots: Sequence[EnvSlot]
    scorer: Scorer
    groups: GroupSettings

    def generate(self, rows: Sequence[Row], n: int, sampling: SamplingParams) -> list[Group]:
        return self.backend.generate([self.encoder.encode(row.prompt) for row in rows], n, sampling)

    def score(self, groups: Sequence[Group], batch: Sequence[tuple[int, Row]]) -> list[GroupScores]:
        """Each group's rewards, environment by environment (a scorer call covers many groups)."""
        out: list[GroupScores | None] = [None] * len(groups)
        for env_index, slot in enumerate(self.slots):
            idx = [i for i, (e, _) in enumerate(batch) if e == env_index]
            if idx:
                texts = [[c.text for c in groups[i].completions] for i in idx]
                scored = self.scorer.score(slot.name, slot.env, [batch[i][1] for i in idx], texts)
                for i, s in zip(idx, scored, strict=True):
                    out[i] = s
        return [s for s in out if s is not None]

    def collect(self, batch: Sequence[tuple[int, Row]], sampling: SamplingParams) -> Rollouts:
        """Sample a group per (env index, row), score it, and turn the kept groups into `Sample`s."""
        groups = self.generate([row for _, row in batch], self.groups.size, sampling)
        out = Rollouts([], [])
        for gi, (group, scores) in enumerate(zip(groups, self.score(groups, batch), strict=True)):
            env = self.slots[batch[gi][0]].name
            out.errored[env] += scores.errored
            adv = group_advantages(scores.rewards, scale=self.groups.scale_rewards)
            keep = not (self.groups.drop_zero_advantage and is_zero_advantage(adv))
            out.filtered_groups += not keep
            gid = sampling.seed_offset + gi
            for c, r, a, parts in zip(group.completions, scores.rewards, adv, scores.parts, strict=True):
                out.records.append(
                    {
                        "group": gid,
                        "env": env,
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
                    mask = [1] * len(c.token_ids)
                    out.samples.append(Sample(group.prompt_ids, c.token_ids, c.logprobs, mask, r, a, gid))
        return out

    def collect_share(
        self, batch: Sequence[tuple[int, Row]], sampling: SamplingParams, dist: Dist
    ) -> StepRollouts:
        """This rank's contiguous share of the step's rows; metrics over every rank's share."""
        start, stop = dist.shard(len(batch))
        sampling = sampling.with_offset(start)
        mine = self.collect(batch[start:stop], sampling)
        shares = dist.all_gather((mine.records, mine.errored, mine.filtered_groups))
        records = [r for recs, _, _ in shares for r in recs]
        errored = sum((errs for _, errs, _ in shares), Counter[str]())
        metrics = rollout_metrics(records, errored, sum(f for _, _, f in shares))
        return StepRollouts(mine, records, metrics, sampling)


def rollout_metrics(
    records: Sequence[dict[str, Any]], errored: Counter[str], filtered: int
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
