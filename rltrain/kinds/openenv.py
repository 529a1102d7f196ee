"""The OpenEnv kind (`[[env]] openenv = {url = ...}` or `{path = ..., python = ...}`): each episode is one
session of an OpenEnv server (envs/openenv_client.py): reset with the row's seed, the model's reply as
an action, step, the observation as the next user message, until done or max_turns.

The first turns of the step's prompts are sampled in one engine batch. Each later reply is sampled from
the episode's exact token ids with the observation's tokens appended and masked (rollout/bridge.py), as
the native kind's multi-turn episodes are, and the episodes waiting for a reply join one engine batch.
The environment scores its episodes itself (the sum or the last of its step rewards). The server is
started (or reached) at load, so the rows are its real first observations, and stops with the run.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rltrain.config import EnvConfig
from rltrain.envs.base import Environment, Message, Row
from rltrain.envs.loader import EnvironmentLoadError
from rltrain.envs.openenv_client import EpisodeResult, OpenEnvClient, OpenEnvSpec, Reply
from rltrain.envs.openenv_server import OpenEnvError
from rltrain.envs.scoring import GroupScores
from rltrain.kinds.base import EnvSlot, Item, Kind, PromptLengths, RunnerContext
from rltrain.rollout.batcher import Batcher
from rltrain.rollout.bridge import ChatBridge
from rltrain.rollout.episodes import Episode, Part, start_episode
from rltrain.rollout.prompting import PromptEncoder
from rltrain.types import Completion, Request, SamplingParams, prompt_seed

log = logging.getLogger("rltrain")


class OpenEnvEnv:
    """An OpenEnv server's environment: rows from its resets, episodes in its sessions."""

    kind = "openenv"

    def __init__(self, client: OpenEnvClient) -> None:
        self.client = client
        self.rows: list[Row] = client.rows()
        self.eval_rows: list[Row] | None = None
        self.max_turns = client.spec.max_turns
        weakref.finalize(self, client.close)  # a server this run started stops with it, played or not

    def prompt_lengths(self, encoder: PromptEncoder) -> PromptLengths:
        return PromptLengths([len(encoder.encode(row.prompt)) for row in self.rows])  # real observations

    def worker_spec(self, name: str) -> None:
        return None  # its code runs in its server

    def start_runner(self, ctx: RunnerContext) -> OpenEnvRunner:
        return OpenEnvRunner(ctx)


@functools.cache
def _self_scored() -> Environment:
    """What an Episode reads of its environment: multi-turn, no tools (the server plays and scores)."""
    return Environment([{"question": "-"}], _unscored, env_response=_no_reply)


def _unscored(completion: Any) -> float:
    return 0.0


def _no_reply(messages: list[Message], state: dict[str, Any]) -> None:
    return None


def _client(slot: EnvSlot) -> OpenEnvClient:
    if not isinstance(slot.env, OpenEnvEnv):
        raise TypeError(f"environment {slot.name} is of kind {slot.env.kind}, not openenv")
    return slot.env.client


class OpenEnvRunner:
    """Every OpenEnv environment's episodes, concurrent up to each server's capacity."""

    def __init__(self, ctx: RunnerContext) -> None:
        self.ctx = ctx
        self.bridge = ChatBridge(ctx.encoder.tokenizer, ctx.encoder.template_kwargs, None)
        self.clients: dict[str, OpenEnvClient] = {}
        self._logged: set[str] = set()

    def episodes(self, items: Sequence[Item], n: int, sampling: SamplingParams) -> list[list[Episode]]:
        if not items:
            return []
        prompts = [self.ctx.encoder.encode(it.row.prompt) for it in items]
        out = []
        for it, group in zip(items, self.ctx.backend.generate(prompts, n, sampling), strict=True):
            self.clients.setdefault(it.slot.name, _client(it.slot))
            out.append([self._start(it, j, group.prompt_ids, c) for j, c in enumerate(group.completions)])
        playing = [(self.clients[it.slot.name], ep) for it, eps in zip(items, out, strict=True) for ep in eps]
        asyncio.run(_Play(self, sampling).all(playing))
        self._log_errors(out)
        return out

    def _start(self, it: Item, member: int, prompt_ids: list[int], first: Completion) -> Episode:
        ep = Episode(it.slot.name, _self_scored(), it.row, it.group, member, self.bridge, [Part(prompt_ids)])
        start_episode(ep, first, self.decode)
        return ep

    def decode(self, ids: list[int]) -> str:
        return str(self.ctx.encoder.tokenizer.decode(ids, skip_special_tokens=False))

    def _log_errors(self, groups: list[list[Episode]]) -> None:
        for ep in (ep for group in groups for ep in group if ep.error):
            kind = f"{ep.env_name}:{(ep.error or '').split(':')[0]}"
            if kind not in self._logged:  # each kind once: the records keep every episode's error
                self._logged.add(kind)
                log.warning("environment %s: an episode failed: %s", ep.env_name, ep.error)

    def score(self, items: Sequence[Item], groups: Sequence[list[Episode]]) -> list[GroupScores]:
        """The server scored its episodes; a failed one scores error_reward."""
        out = []
        for episodes in groups:
            failed = [ep.error is not None or ep.reward is None for ep in episodes]
            rewards = [self.ctx.scorer.error_reward if bad else float(ep.reward or 0.0)
                       for bad, ep in zip(failed, episodes, strict=True)]  # fmt: skip
            out.append(GroupScores(rewards, [ep.reward_parts for ep in episodes], sum(failed), failed))
        return out

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


class _Play:
    """One step's OpenEnv episodes, and how many of them are with their server (not waiting to sample)."""

    def __init__(self, runner: OpenEnvRunner, sampling: SamplingParams) -> None:
        self.limits, self.sampling = runner.ctx.limits, sampling
        self.at_server = 0
        self.batcher = Batcher(
            runner.ctx.backend, self.limits.batch_window_s, busy=lambda: self.at_server > 0
        )

    async def all(self, episodes: list[tuple[OpenEnvClient, Episode]]) -> None:
        self.batcher.start()
        try:
            await asyncio.gather(*(self._episode(client, ep) for client, ep in episodes))
        finally:
            await self.batcher.stop()

    async def _episode(self, client: OpenEnvClient, ep: Episode) -> None:
        self.at_server += 1
        try:
            result = await client.run_episode(ep.row, self._reply(ep), self.limits.episode_timeout_s)
        except (OpenEnvError, OSError) as err:
            ep.finish, ep.error = "error", str(err)
            return
        finally:
            self.at_server -= 1
            self.batcher.nudge()
        _finish(ep, result, client.spec.reward)

    def _reply(self, ep: Episode) -> Reply:
        """The model's side of the session: the batched first turn, then one sampled reply per
        observation, from the episode's exact ids with the observation's ids inserted (masked)."""
        started = False

        async def reply(conversation: list[Message]) -> str | None:
            nonlocal started
            if not started:  # sampled with the step's other first turns
                started = True
                return ep.text
            return await self._next(ep, conversation[len(ep.messages) :])

        return reply

    async def _next(self, ep: Episode, new: list[Message]) -> str | None:
        assert ep.bridge is not None
        last = ep.part.ids[-1] if ep.finish == "stop" and ep.part.ids else None
        delta = ep.bridge.extend(ep.messages, new, last)
        ep.messages += new
        if delta is None:  # the template rewrites history: continue as a new sample
            ep.split(ep.bridge.encode(ep.messages))
        else:
            ep.add_inserted(delta)
        if len(ep.context()) + self.sampling.max_tokens > self.limits.max_context:
            return None  # the episode ends here ("context")
        key = f"{ep.group}/{ep.member}/{ep.turns}"
        seed = None if self.sampling.seed is None else prompt_seed(self.sampling.seed, key)
        self.at_server -= 1
        self.batcher.nudge()
        try:
            c = await self.batcher.generate(Request(ep.context(), 1, seed), self.sampling)
        finally:
            self.at_server += 1
        ep.add_sampled(c)
        ep.messages.append({"role": "assistant", "content": c.text})
        return c.text


def _finish(ep: Episode, result: EpisodeResult, mode: str) -> None:
    """The session's outcome on the episode: how it ended, its reward and what the server refused."""
    ep.finish, ep.error = result.finish, result.error
    if result.error is None:
        ep.reward = result.reward
        ep.reward_parts = {mode: result.reward, "invalid_replies": float(result.invalid_replies)}


def _load(entry: EnvConfig) -> OpenEnvEnv:
    assert entry.openenv is not None
    cfg = entry.openenv.model_dump()
    if cfg["python"]:  # absolute, not resolved: a venv's python is a link to its base interpreter
        cfg["python"] = str(Path(cfg["python"]).expanduser().absolute())
    spec = OpenEnvSpec(**cfg)
    try:
        client = OpenEnvClient.open(spec)
    except OpenEnvError as err:
        raise EnvironmentLoadError(f"environment {entry.label!r}: {err}") from err
    try:
        return OpenEnvEnv(client)
    except BaseException as err:
        client.close()
        if isinstance(err, OpenEnvError):
            raise EnvironmentLoadError(f"environment {entry.label!r}: {err}") from err
        raise


KIND = Kind("openenv", claims=lambda entry: entry.openenv is not None, load=_load)
