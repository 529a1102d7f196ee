"""Sampling and scoring: each prompt of a batch goes to its environment's kind, whose runner plays its
episodes on the engine and scores them (rltrain/kinds/). The scored groups become `Sample`s in
assemble.py; records and metrics are metrics.py's; every rank's share meets in shares.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rltrain.envs.base import Row
from rltrain.envs.scoring import GroupScores
from rltrain.kinds.base import EnvSlot, EpisodeRunner, Item, RunnerContext
from rltrain.orchestrator.assemble import GroupSettings, Rollouts, assemble
from rltrain.rollout.episodes import Episode
from rltrain.types import SamplingParams

PromptBatch = Sequence[tuple[int, Row]]  # (environment index, row) per prompt


@dataclass
class Sampled:
    """A batch's episodes, sampled and not yet scored."""

    batch: PromptBatch
    groups: list[list[Episode]]  # per row, its group's episodes
    version: int  # the engine's adapter version when sampling began


class Collector:
    """Samples and scores groups of episodes for rows of the run's environments."""

    def __init__(self, slots: Sequence[EnvSlot], ctx: RunnerContext, groups: GroupSettings) -> None:
        self.slots, self.ctx, self.groups = list(slots), ctx, groups
        self.backend, self.encoder = ctx.backend, ctx.encoder
        self._runners: dict[str, EpisodeRunner] = {}  # one per kind, started when first needed

    def _by_kind(self, batch: PromptBatch) -> dict[str, list[int]]:
        """Indices of the batch's prompts per kind, kinds in the order of the run's environments."""
        kinds = dict.fromkeys(self.slots[e].env.kind for e, _ in sorted(batch, key=lambda p: p[0]))
        return {k: [i for i, (e, _) in enumerate(batch) if self.slots[e].env.kind == k] for k in kinds}

    def _runner(self, slot: EnvSlot) -> EpisodeRunner:
        if slot.env.kind not in self._runners:
            self._runners[slot.env.kind] = slot.env.start_runner(self.ctx)
        return self._runners[slot.env.kind]

    def _items(self, batch: PromptBatch, gids: Sequence[int], idx: list[int]) -> list[Item]:
        return [Item(gids[i], self.slots[batch[i][0]], batch[i][1]) for i in idx]

    def episodes(self, batch: PromptBatch, n: int, sampling: SamplingParams) -> list[list[Episode]]:
        """`n` episodes per row, in order; each kind's prompts in one call to its runner."""
        gids = [sampling.seed_offset + i for i in range(len(batch))]
        out: dict[int, list[Episode]] = {}
        for idx in self._by_kind(batch).values():
            items = self._items(batch, gids, idx)
            out.update(zip(idx, self._runner(items[0].slot).episodes(items, n, sampling), strict=True))
        return [out[i] for i in range(len(batch))]

    def score(self, batch: PromptBatch, groups: list[list[Episode]]) -> list[GroupScores]:
        """Each group's rewards, by its kind's runner; a failed episode scores error_reward."""
        gids = [groups[i][0].group if groups[i] else i for i in range(len(batch))]
        out: dict[int, GroupScores] = {}
        for idx in self._by_kind(batch).values():
            items = self._items(batch, gids, idx)
            scored = self._runner(items[0].slot).score(items, [groups[i] for i in idx])
            out.update(zip(idx, scored, strict=True))
        return [out[i] for i in range(len(batch))]

    def sample(self, batch: PromptBatch, sampling: SamplingParams) -> Sampled:
        """The engine's part: every row's episodes (multi-turn ones with their environment turns)."""
        version = self.backend.version  # the adapter the batch starts from, where the engine reports none
        return Sampled(batch, self.episodes(batch, self.groups.size, sampling), version)

    def finish(self, sampled: Sampled) -> Rollouts:
        """The environment's part: the episodes scored, and the kept groups as `Sample`s. Needs no
        engine, so a producer may run it beside sampling the next batch."""
        scores = self.score(sampled.batch, sampled.groups)
        names = [self.slots[e].name for e, _ in sampled.batch]
        return assemble(sampled.groups, scores, names, self.groups, sampled.version)

    def collect(self, batch: PromptBatch, sampling: SamplingParams) -> Rollouts:
        """Episodes for every (env index, row), scored, and the kept groups as `Sample`s."""
        return self.finish(self.sample(batch, sampling))

    def abort(self) -> None:
        """Fail what is in flight now: the workers are killed (environment calls fail at once), and a
        runner with an `abort` (one that runs episodes on a loop of its own) cancels its episodes."""
        self.ctx.scorer.pool.close()
        for runner in self._runners.values():
            abort = getattr(runner, "abort", None)
            if abort is not None:
                abort()

    def close(self) -> None:
        try:
            for runner in self._runners.values():
                runner.close()
        finally:
            self.ctx.scorer.close()
