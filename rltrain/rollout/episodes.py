"""Episodes: one per completion of a group, single-turn or multi-turn, and the driver that runs the
multi-turn ones together.

Every episode starts from the step's batched first turn (a group's prompt is prefilled once). Multi-turn
episodes then run as coroutines: the environment's `env_response` and tools run in worker processes
(in threads that only wait), and every episode's next generation joins one engine batch, so turn k of
one episode is sampled with turn j of another and a slow environment does not serialise the step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from rltrain.envs.base import Environment, Message, Rollout, Row
from rltrain.envs.workers import CallFailed
from rltrain.rollout.backend import RolloutBackend
from rltrain.rollout.batcher import Batcher
from rltrain.rollout.bridge import ChatBridge
from rltrain.rollout.toolcalls import ParsedTurn, assistant_message, parse_turn
from rltrain.types import Completion, Request, SamplingParams, prompt_seed

EnvCall = Callable[..., Any]  # (env name, Environment method, *args, timeout_s=...) -> result, in a worker
Decode = Callable[[list[int]], str]


@dataclass(frozen=True)
class EpisodeLimits:
    max_context: int  # prompt and every turn together (the engine's context length)
    turn_timeout_s: float  # one env_response or tool call
    episode_timeout_s: float  # the whole episode after its first turn
    batch_window_s: float = 0.02  # how long a generation waits for episodes still in environment code


@dataclass
class Part:
    """One trainable sample of an episode: a prompt and the turns after it (a split starts another)."""

    prompt_ids: list[int]
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)


@dataclass
class Episode:
    env_name: str
    env: Environment
    row: Row
    group: int  # global group id
    member: int  # index in the group
    bridge: ChatBridge | None  # multi-turn only
    parts: list[Part]
    messages: list[Message] = field(default_factory=list)  # the whole conversation
    state: dict[str, Any] = field(default_factory=dict)
    text: str = ""  # the first turn's text (what a single-turn reward function scores)
    finish: str = "stop"  # stop | length | max_turns | done | context | timeout | error
    error: str | None = None
    turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    splits: int = 0
    env_s: float = 0.0
    tool_s: float = 0.0
    input_tokens: int = 0  # prompts and environment-inserted tokens
    output_tokens: int = 0  # sampled tokens
    reward: float | None = None  # scored by the environment itself (verifiers v1), not by reward functions
    reward_parts: dict[str, float] = field(default_factory=dict)
    shown_from: int | None = None  # the first message after the prompt (None: after the row's prompt)
    version: int | None = None  # the oldest adapter version the engine reported for its turns

    @property
    def part(self) -> Part:
        return self.parts[-1]

    def context(self) -> list[int]:
        return self.part.prompt_ids + self.part.ids

    def add_sampled(self, c: Completion) -> None:
        self.part.ids += c.token_ids
        self.part.logprobs += c.logprobs
        self.part.mask += [1] * len(c.token_ids)
        self.output_tokens += len(c.token_ids)
        self.turns += 1
        self.finish = c.finish_reason
        if c.version is not None:
            self.version = c.version if self.version is None else min(self.version, c.version)

    def add_inserted(self, ids: list[int]) -> None:
        self.part.ids += ids
        self.part.logprobs += [0.0] * len(ids)
        self.part.mask += [0] * len(ids)
        self.input_tokens += len(ids)

    def split(self, prompt_ids: list[int]) -> None:
        self.parts.append(Part(prompt_ids))
        self.input_tokens += len(prompt_ids)
        self.splits += 1

    def after_prompt(self) -> list[Message]:
        return self.messages[len(self.row.prompt) if self.shown_from is None else self.shown_from :]

    def rollout(self) -> Rollout:
        """What the reward functions see: the text, or (multi-turn) the messages after the prompt."""
        if not self.env.multi_turn:
            return Rollout(self.text, self.state)
        return Rollout(self.after_prompt(), self.state)

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"finish": self.finish}
        if self.env.multi_turn:
            out |= {"turns": self.turns, "tool_calls": self.tool_calls, "tool_errors": self.tool_errors}
            out |= {"splits": self.splits, "env_s": self.env_s, "tool_s": self.tool_s}
            out["messages"] = self.after_prompt()
            if self.error:
                out["error"] = self.error
        return out


def start_episode(ep: Episode, first: Completion, decode: Decode) -> ParsedTurn:
    """Take the batched first turn; returns the parsed turn (tool calls included)."""
    ep.input_tokens += len(ep.part.prompt_ids)
    ep.add_sampled(first)
    ep.text = first.text
    ep.messages = [*ep.row.prompt]
    ep.state = ep.env.initial_state(ep.row)
    return _append_turn(ep, first, decode)


def _append_turn(ep: Episode, c: Completion, decode: Decode) -> ParsedTurn:
    if not ep.env.tools or ep.bridge is None:
        parsed = ParsedTurn(c.text)
    else:  # special tokens kept: harmony's tool calls are made of them
        ids = c.token_ids[:-1] if c.finish_reason == "stop" else c.token_ids  # without the stop token
        parsed = parse_turn(decode(ids), ep.bridge.tool_format)
        ep.tool_errors += len(parsed.errors)  # malformed calls: counted even on the last turn
    ep.messages.append(assistant_message(parsed))
    return parsed


class EpisodeDriver:
    """Runs multi-turn episodes to their end, batching their generations into the backend."""

    def __init__(
        self, backend: RolloutBackend, env_call: EnvCall, limits: EpisodeLimits, workers: int
    ) -> None:
        self.backend, self.env_call, self.limits = backend, env_call, limits
        self.threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="env")

    def close(self) -> None:
        self.threads.shutdown(wait=False, cancel_futures=True)

    def run(
        self, episodes: list[tuple[Episode, ParsedTurn]], sampling: SamplingParams, decode: Decode
    ) -> None:
        if episodes:
            asyncio.run(_Run(self, sampling, decode).all(episodes))


class _Run:
    """One step's episodes and how many of them are in environment code."""

    def __init__(self, driver: EpisodeDriver, sampling: SamplingParams, decode: Decode) -> None:
        self.d, self.sampling, self.decode = driver, sampling, decode
        self.in_env = 0
        self.batcher = Batcher(driver.backend, driver.limits.batch_window_s, busy=lambda: self.in_env > 0)

    async def all(self, episodes: list[tuple[Episode, ParsedTurn]]) -> None:
        self.batcher.start()
        try:
            await asyncio.gather(*(self._guarded(ep, parsed) for ep, parsed in episodes))
        finally:
            await self.batcher.stop()

    async def _guarded(self, ep: Episode, parsed: ParsedTurn) -> None:
        try:
            await asyncio.wait_for(self._episode(ep, parsed), self.d.limits.episode_timeout_s)
        except TimeoutError:
            ep.finish, ep.error = "timeout", f"episode timed out after {self.d.limits.episode_timeout_s:g}s"

    async def _episode(self, ep: Episode, parsed: ParsedTurn) -> None:
        assert ep.bridge is not None
        while ep.turns < ep.env.max_turns:
            last = ep.part.ids[-1] if ep.finish == "stop" and ep.part.ids else None
            history = list(ep.messages)
            new = await self._respond(ep, parsed)
            if new is None:
                ep.finish = "done" if ep.error is None else "error"
                return
            delta = ep.bridge.extend(history, new, last)
            ep.messages += new
            if delta is None:  # the template rewrites history: continue as a new sample
                ep.split(ep.bridge.encode(ep.messages))
            else:
                ep.add_inserted(delta)
            if len(ep.context()) + self.sampling.max_tokens > self.d.limits.max_context:
                ep.finish = "context"
                return
            key = f"{ep.group}/{ep.member}/{ep.turns}"
            seed = None if self.sampling.seed is None else prompt_seed(self.sampling.seed, key)
            c = await self.batcher.generate(Request(ep.context(), 1, seed), self.sampling)
            ep.add_sampled(c)
            parsed = _append_turn(ep, c, self.decode)
        ep.finish = "max_turns"

    async def _call(self, ep: Episode, method: str, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        self.in_env += 1
        try:
            call = partial(
                self.d.env_call, ep.env_name, method, *args, timeout_s=self.d.limits.turn_timeout_s
            )
            return await loop.run_in_executor(self.d.threads, call)
        finally:
            self.in_env -= 1
            self.batcher.nudge()

    async def _respond(self, ep: Episode, parsed: ParsedTurn) -> list[Message] | None:
        """Tool results for the turn's calls, else the environment's answer (None: the episode is over)."""
        if parsed.calls or parsed.errors:
            out: list[Message] = [{"role": "tool", "content": f"Error: {e}"} for e in parsed.errors]
            for call in parsed.calls:
                ep.tool_calls += 1
                start = time.perf_counter()
                try:
                    result = await self._call(ep, "run_tool", call.name, call.arguments)
                except CallFailed as err:
                    ep.tool_errors += 1
                    result = f"Error: {err.kind}: {err.detail}"
                ep.tool_s += time.perf_counter() - start
                out.append({"role": "tool", "name": call.name, "content": result})
            return out
        if ep.env.env_response is None:
            return None
        ep.state["turn"] = ep.turns
        start = time.perf_counter()
        try:
            new, ep.state = await self._call(ep, "respond", ep.messages, ep.state)
        except CallFailed as err:
            ep.error = f"env_response failed ({err.kind}: {err.detail})"
            return None
        finally:
            ep.env_s += time.perf_counter() - start
        return new  # type: ignore[no-any-return]
