"""Rows -> episodes (single- or multi-turn) -> scored `Sample`s, the trainer's only input."""

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
from rltrain.envs.verifiers_v1 import V1Env
from rltrain.rollout.backend import RolloutBackend
from rltrain.rollout.bridge import ChatBridge
from rltrain.rollout.episodes import Episode, EpisodeDriver, EpisodeLimits, Part, start_episode
from rltrain.rollout.prompting import PromptEncoder
from rltrain.types import Sample, SamplingParams

Batch = Sequence[tuple[int, Row]]  # (environment index, row) per prompt


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


@dataclass
class Sampled:
    """A batch's episodes, sampled and not yet scored."""

    batch: Batch
    groups: list[list[Episode]]  # per row, its group's episodes
    version: int  # the engine's adapter version when sampling began


@dataclass
class StepRollouts:
    """One step's rollouts: this rank's samples, and what every rank's share adds up to."""

    mine: Rollouts
    records: list[dict[str, Any]]  # every rank's records, in rank order
    metrics: dict[str, float]
    sampling: SamplingParams


class Collector:
    """Samples and scores groups of episodes for rows of the run's environments."""

    def __init__(
        self,
        backend: RolloutBackend,
        encoder: PromptEncoder,
        slots: Sequence[EnvSlot],
        scorer: Scorer,
        groups: GroupSettings,
    ) -> None:
        self.backend, self.encoder, self.slots, self.scorer, self.groups = (
            backend,
            encoder,
            slots,
            scorer,
            groups,
        )
        self.limits: EpisodeLimits | None = None  # set by the run for multi-turn environments
        self._bridges: dict[str, ChatBridge] = {}
        self._driver: EpisodeDriver | None = None
        self._v1: Any = None  # the verifiers runner (rollout/v1_runner.py), when a verifiers env is used

    def bridge(self, slot: EnvSlot) -> ChatBridge:
        if slot.name not in self._bridges:
            tools = slot.env.tool_schemas() if slot.env.tools else None
            self._bridges[slot.name] = ChatBridge(self.encoder.tokenizer, self.encoder.template_kwargs, tools)
        return self._bridges[slot.name]

    def _prompt(self, env_index: int, row: Row) -> list[int]:
        slot = self.slots[env_index]
        return self.bridge(slot).encode(row.prompt) if slot.env.tools else self.encoder.encode(row.prompt)

    def decode(self, ids: list[int]) -> str:
        return str(self.encoder.tokenizer.decode(ids, skip_special_tokens=False))

    def episodes(self, batch: Batch, n: int, sampling: SamplingParams) -> list[list[Episode]]:
        """`n` episodes per row, in order: verifiers environments run their own loop against the
        endpoint; the others take their first turn in one batch, then the multi-turn ones go on."""
        gids = [sampling.seed_offset + i for i in range(len(batch))]
        out: dict[int, list[Episode]] = {}
        for e, slot in enumerate(self.slots):
            mine = [i for i, (env_index, _) in enumerate(batch) if env_index == e]
            if mine and isinstance(slot.env, V1Env):
                rows = [(gids[i], batch[i][1]) for i in mine]
                out.update(zip(mine, self._v1_for().episodes(slot, rows, n, sampling), strict=True))
        rest = [i for i in range(len(batch)) if i not in out]
        out.update(
            zip(
                rest,
                self._own_episodes([batch[i] for i in rest], [gids[i] for i in rest], n, sampling),
                strict=True,
            )
        )
        return [out[i] for i in range(len(batch))]

    def _own_episodes(
        self, batch: Batch, gids: list[int], n: int, sampling: SamplingParams
    ) -> list[list[Episode]]:
        if not batch:
            return []
        prompts = [self._prompt(e, row) for e, row in batch]
        groups = self.backend.generate(prompts, n, sampling)
        out, ongoing = [], []
        for gid, (e, row), group in zip(gids, batch, groups, strict=True):
            slot, mine = self.slots[e], []
            for j, c in enumerate(group.completions):
                ep = Episode(
                    env_name=slot.name,
                    env=slot.env,
                    row=row,
                    group=gid,
                    member=j,
                    bridge=self.bridge(slot) if slot.env.multi_turn else None,
                    parts=[Part(group.prompt_ids)],
                )
                parsed = start_episode(ep, c, self.decode)
                mine.append(ep)
                if slot.env.multi_turn and ep.turns < slot.env.max_turns:
                    ongoing.append((ep, parsed))
                elif slot.env.multi_turn:
                    ep.finish = "max_turns"
            out.append(mine)
        if ongoing:
            self._driver_for().run(ongoing, sampling, self.decode)
        return out

    def _v1_for(self) -> Any:
        if self._v1 is None:
            from rltrain.rollout.v1_runner import V1Runner  # imports aiohttp and, when used, verifiers

            if self.limits is None:
                raise RuntimeError("verifiers environments need episode limits (Collector.limits)")
            path = str(getattr(self.encoder.tokenizer, "name_or_path", ""))
            self._v1 = V1Runner(self.backend, path, self.limits.max_context, self.limits.episode_timeout_s)
        return self._v1

    def _driver_for(self) -> EpisodeDriver:
        if self._driver is None:
            if self.limits is None:
                raise RuntimeError("multi-turn environments need episode limits (Collector.limits)")
            pool = self.scorer.pool
            self._driver = EpisodeDriver(self.backend, pool.call, self.limits, pool.size)
        return self._driver

    def score(self, batch: Batch, groups: list[list[Episode]]) -> list[GroupScores]:
        """Each group's rewards, environment by environment; a failed episode scores error_reward."""
        out: list[GroupScores | None] = [None] * len(groups)
        for env_index, slot in enumerate(self.slots):
            idx = [i for i, (e, _) in enumerate(batch) if e == env_index]
            if not idx:
                continue
            if isinstance(slot.env, V1Env):  # verifiers scored its own traces
                for i in idx:
                    out[i] = self._scored_by_env(groups[i])
                continue
            items = [[ep.rollout() for ep in groups[i]] for i in idx]
            scored = self.scorer.score(slot.name, slot.env, [batch[i][1] for i in idx], items)
            for i, s in zip(idx, scored, strict=True):
                bad = [ep.error is not None for ep in groups[i]]
                s.rewards = [
                    self.scorer.error_reward if b else r for b, r in zip(bad, s.rewards, strict=True)
                ]
                s.errored += sum(b and not failed for b, failed in zip(bad, s.failed, strict=True))
                out[i] = s
        return [s for s in out if s is not None]

    def _scored_by_env(self, episodes: list[Episode]) -> GroupScores:
        failed = [ep.error is not None or ep.reward is None for ep in episodes]
        rewards = [
            self.scorer.error_reward if bad else float(ep.reward or 0.0)
            for bad, ep in zip(failed, episodes, strict=True)
        ]
        return GroupScores(rewards, [ep.reward_parts for ep in episodes], errored=sum(failed), failed=failed)

    def collect(self, batch: Batch, sampling: SamplingParams) -> Rollouts:
        """Episodes for every (env index, row), scored, and the kept groups as `Sample`s."""
        return self.finish(self.sample(batch, sampling))

    def sample(self, batch: Batch, sampling: SamplingParams) -> Sampled:
        """The engine's part: every row's episodes (multi-turn ones with their environment turns)."""
        version = self.backend.version  # the adapter the batch starts from, where the engine reports none
        return Sampled(batch, self.episodes(batch, self.groups.size, sampling), version)

    def finish(self, sampled: Sampled) -> Rollouts:
        """The environment's part: the episodes scored, and the kept groups as `Sample`s. Needs no
        engine, so a producer may run it beside sampling the next batch."""
        batch, groups, version = sampled.batch, sampled.groups, sampled.version
        out = Rollouts([], [])
        for gi, (episodes, scores) in enumerate(zip(groups, self.score(batch, groups), strict=True)):
            env = self.slots[batch[gi][0]].name
            out.errored[env] += scores.errored
            adv = group_advantages(scores.rewards, scale=self.groups.scale_rewards)
            keep = not (self.groups.drop_zero_advantage and is_zero_advantage(adv))
            out.filtered_groups += not keep
            for ep, r, a, parts in zip(episodes, scores.rewards, adv, scores.parts, strict=True):
                out.records.append(_record(ep, r, a, parts))
                if keep:
                    v = version if ep.version is None else ep.version
                    for p in ep.parts:
                        sample = Sample(p.prompt_ids, p.ids, p.logprobs, p.mask, r, a, ep.group, v)
                        out.samples.append(sample)
        return out

    def collect_share(self, batch: Batch, sampling: SamplingParams, dist: Dist) -> StepRollouts:
        """This rank's contiguous share of the step's rows; metrics over every rank's share."""
        start, stop = dist.shard(len(batch))
        sampling = sampling.with_offset(start)
        return gather(self.collect(batch[start:stop], sampling), sampling, dist)

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()
        if self._v1 is not None:
            self._v1.close()
        self.scorer.close()


def gather(mine: Rollouts, sampling: SamplingParams, dist: Dist) -> StepRollouts:
    """Every rank's records and counts (a collective), and the step's metrics over all of them."""
    shares = dist.all_gather((mine.records, mine.errored, mine.filtered_groups))
    records = [r for recs, _, _ in shares for r in recs]
    errored = sum((errs for _, errs, _ in shares), Counter[str]())
    metrics = rollout_metrics(records, errored, sum(f for _, _, f in shares))
    return StepRollouts(mine, records, metrics, sampling)


def _record(ep: Episode, reward: float, advantage: float, parts: dict[str, float]) -> dict[str, Any]:
    return {
        "group": ep.group,
        "env": ep.env_name,
        "row": ep.row.key,
        "prompt": ep.row.prompt,  # for readers of rollouts/step_N.jsonl (dashboard, W&B tables)
        "completion": ep.text,
        "reward": reward,
        "advantage": advantage,
        "parts": parts,
        "prompt_tokens": ep.input_tokens,
        "completion_tokens": ep.output_tokens,
        **ep.record(),
    }


def rollout_metrics(
    records: Sequence[dict[str, Any]], errored: Counter[str], filtered: int
) -> dict[str, float]:
    """Step metrics from every episode's record (all ranks' records, when distributed)."""
    rewards = [r["reward"] for r in records]
    n = max(len(rewards), 1)
    mean = sum(rewards) / n
    out = {
        "reward_mean": mean,
        "reward_std": (sum((r - mean) ** 2 for r in rewards) / n) ** 0.5,
        "completion_len_mean": sum(r["completion_tokens"] for r in records) / n,
        "truncated_frac": sum(r["finish"] in ("length", "context") for r in records) / n,
        "errored_rollouts": float(sum(errored.values())),
        "filtered_groups": float(filtered),
        "input_tokens": float(sum(r["prompt_tokens"] for r in records)),
        "output_tokens": float(sum(r["completion_tokens"] for r in records)),
    }
    multi = [r for r in records if "turns" in r]
    if multi:
        out["turns_mean"] = sum(r["turns"] for r in multi) / len(multi)
        for key in ("tool_calls", "tool_errors", "splits", "env_s", "tool_s"):
            out[key] = float(sum(r[key] for r in multi))
    for name in sorted({r["env"] for r in records}):
        mine = [r["reward"] for r in records if r["env"] == name]
        out[f"env/{name}/reward_mean"] = sum(mine) / len(mine)
        out[f"env/{name}/errored_rollouts"] = float(errored.get(name, 0))
    return out
