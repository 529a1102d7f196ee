"""The native kind: an `rltrain.Environment` (reward functions, optional env_response and tools), loaded
by id from a built-in, an installed module, a Hub slug or a file. Its code runs in the run's worker
processes; the first turn of every prompt of the step is sampled in one engine batch, then the
multi-turn episodes go on together (rollout/episodes.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rltrain.config import EnvConfig
from rltrain.envs.base import Environment, Row
from rltrain.envs.loader import load_rltrain_environment
from rltrain.envs.scoring import GroupScores
from rltrain.envs.workers import EnvSpec
from rltrain.kinds.base import EnvSlot, Item, Kind, PromptLengths, RunnerContext
from rltrain.rollout.bridge import ChatBridge
from rltrain.rollout.driver import EpisodeDriver
from rltrain.rollout.episodes import Episode, Part, start_episode
from rltrain.rollout.prompting import PromptEncoder
from rltrain.rollout.toolcalls import tool_format
from rltrain.types import SamplingParams


class NativeEnv:
    """An `rltrain.Environment` as the orchestrator sees it."""

    kind = "native"

    def __init__(self, env: Environment, env_id: str, args: dict[str, Any]) -> None:
        self.env, self.env_id, self.args = env, env_id, args
        self.rows: list[Row] = list(env.rows)
        self.eval_rows = env.eval_rows
        self.max_turns = env.max_turns if env.multi_turn else 1

    def prompt_lengths(self, encoder: PromptEncoder) -> PromptLengths:
        if self.env.tools:
            bridge = ChatBridge(encoder.tokenizer, encoder.template_kwargs, self.env.tool_schemas())
            return PromptLengths([len(bridge.encode(row.prompt)) for row in self.rows])
        return PromptLengths([len(encoder.encode(row.prompt)) for row in self.rows])

    def worker_spec(self, name: str) -> EnvSpec | None:
        return EnvSpec(name, self.env_id, self.args)

    def start_runner(self, ctx: RunnerContext) -> NativeRunner:
        return NativeRunner(ctx)


def _env(slot: EnvSlot) -> Environment:
    """The Environment behind a slot this runner was given (the orchestrator routes by `kind`)."""
    if not isinstance(slot.env, NativeEnv):
        raise TypeError(f"environment {slot.name} is of kind {slot.env.kind}, not native")
    return slot.env.env


class NativeRunner:
    """Every native environment's episodes: one engine batch for all first turns, then the multi-turn
    ones together; rewards by the reward functions in the worker processes."""

    def __init__(self, ctx: RunnerContext) -> None:
        self.ctx = ctx
        self.fmt = tool_format(None, getattr(ctx.encoder.tokenizer, "chat_template", None))
        self._bridges: dict[str, ChatBridge] = {}
        self._driver: EpisodeDriver | None = None

    def bridge(self, slot: EnvSlot) -> ChatBridge:
        if slot.name not in self._bridges:
            env, enc = _env(slot), self.ctx.encoder
            tools = env.tool_schemas() if env.tools else None
            self._bridges[slot.name] = ChatBridge(enc.tokenizer, enc.template_kwargs, tools)
        return self._bridges[slot.name]

    def _prompt(self, slot: EnvSlot, row: Row) -> list[int]:
        return (
            self.bridge(slot).encode(row.prompt) if _env(slot).tools else self.ctx.encoder.encode(row.prompt)
        )

    def decode(self, ids: list[int]) -> str:
        return str(self.ctx.encoder.tokenizer.decode(ids, skip_special_tokens=False))

    def episodes(self, items: Sequence[Item], n: int, sampling: SamplingParams) -> list[list[Episode]]:
        if not items:
            return []
        groups = self.ctx.backend.generate([self._prompt(it.slot, it.row) for it in items], n, sampling)
        out, ongoing = [], []
        for it, group in zip(items, groups, strict=True):
            env, mine = _env(it.slot), []
            for j, c in enumerate(group.completions):
                bridge = self.bridge(it.slot) if env.multi_turn else None
                ep = Episode(it.slot.name, env, it.row, it.group, j, bridge, [Part(group.prompt_ids)])
                parsed = start_episode(ep, c, self.decode, self.fmt)
                mine.append(ep)
                if env.multi_turn and ep.turns < env.max_turns:
                    ongoing.append((ep, parsed))
                elif env.multi_turn and ep.finish == "stop":  # a turn cut by its token limit stays "length"
                    ep.finish = "max_turns"
            out.append(mine)
        if ongoing:
            self._driver_for().run(ongoing, sampling, self.decode)
        return out

    def _driver_for(self) -> EpisodeDriver:
        if self._driver is None:
            pool = self.ctx.scorer.pool
            self._driver = EpisodeDriver(self.ctx.backend, pool.call, self.ctx.limits, pool.size)
        return self._driver

    def score(self, items: Sequence[Item], groups: Sequence[list[Episode]]) -> list[GroupScores]:
        """Environment by environment, each group's reward functions in the workers; a failed episode
        scores error_reward."""
        scorer = self.ctx.scorer
        out: list[GroupScores | None] = [None] * len(items)
        for name in dict.fromkeys(it.slot.name for it in items):
            idx = [i for i, it in enumerate(items) if it.slot.name == name]
            env = _env(items[idx[0]].slot)
            scored = scorer.score(
                name, env, [items[i].row for i in idx], [[ep.rollout() for ep in groups[i]] for i in idx]
            )
            for i, s in zip(idx, scored, strict=True):
                bad = [ep.error is not None for ep in groups[i]]
                s.rewards = [scorer.error_reward if b else r for b, r in zip(bad, s.rewards, strict=True)]
                s.errored += sum(b and not failed for b, failed in zip(bad, s.failed, strict=True))
                out[i] = s
        return [s for s in out if s is not None]

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()


def _load(entry: EnvConfig) -> NativeEnv:
    assert entry.id is not None  # every entry without a taskset has an id (EnvConfig checks)
    return NativeEnv(load_rltrain_environment(entry.id, entry.args), entry.id, entry.args)


KIND = Kind("native", claims=lambda entry: entry.taskset is None, load=_load)
