"""The driver that runs multi-turn episodes to their end, after their batched first turn.

Episodes run as coroutines: the environment's `env_response` and tools run in worker processes (in
threads that only wait), and every episode's next generation joins one engine batch, so turn k of one
episode is sampled with turn j of another and a slow environment does not serialise the step.

Whatever goes wrong inside one episode ends that episode, never the step: a timeout, the engine, the
worker pool, the environment's code or messages make it `outside` (not trained on); a turn the chat
template refuses is the model's (scored error_reward). Tool and environment text is cut to
`max_env_chars`, and the context is checked before anything is appended: no sample outgrows it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from rltrain.envs.base import Message
from rltrain.envs.workers import CallFailed
from rltrain.rollout.backend import RolloutBackend
from rltrain.rollout.batcher import Batcher
from rltrain.rollout.bridge import RenderFailed
from rltrain.rollout.episodes import Decode, Episode, EpisodeLimits, append_turn
from rltrain.rollout.toolcalls import ParsedTurn
from rltrain.types import Request, SamplingParams, prompt_seed

EnvCall = Callable[..., Any]  # (env name, Environment method, *args, timeout_s=...) -> result, in a worker


class OutsideModel(Exception):
    """An episode failed for a reason outside the model: it is not trained on."""


def _bounded(messages: list[Message], cap: int) -> list[Message]:
    """The environment's messages with each text cut to `cap` characters (a marker says how much went)."""
    out = []
    for m in messages:
        content = m.get("content")
        if content is not None and not isinstance(content, str):  # content parts: measured as JSON
            text = json.dumps(content, default=str)
            content = text if len(text) > cap else content
        if isinstance(content, str) and len(content) > cap:
            cut = len(content) - cap
            m = {**m, "content": f"{content[:cap]}\n[... {cut} more characters cut: max_env_chars]"}
        out.append(m)
    return out


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
        limit = self.d.limits.episode_timeout_s
        try:
            await asyncio.wait_for(self._episode(ep, parsed), limit)
        except TimeoutError:
            ep.fail(f"episode timed out after {limit:g}s", outside=True, finish="timeout")
        except OutsideModel as err:
            ep.fail(str(err), outside=True)
        except RenderFailed as err:  # the template refused the model's turn, or the environment's messages
            ep.fail(str(err), outside=err.by != "model")
        except Exception as err:  # anything else in this one episode: its error, not the step's
            ep.fail(f"{type(err).__name__}: {err}", outside=True)

    async def _episode(self, ep: Episode, parsed: ParsedTurn) -> None:
        assert ep.bridge is not None
        limit = self.d.limits.max_context - self.sampling.max_tokens  # room for one more full turn
        while ep.turns < ep.env.max_turns:
            last = ep.part.ids[-1] if ep.finish == "stop" and ep.part.ids else None
            new = await self._respond(ep, parsed)
            if new is None:
                if ep.error is None:
                    ep.finish = "done"
                return
            new = _bounded(new, self.d.limits.max_env_chars)
            delta = ep.bridge.extend(ep.messages, new, last)
            # the template rewrites history: continue as a new sample from the full re-render
            prompt = ep.bridge.encode([*ep.messages, *new]) if delta is None else None
            if (len(prompt) if prompt is not None else len(ep.context()) + len(delta or [])) > limit:
                ep.finish = "context"  # checked before appending: no sample outgrows the context
                return
            ep.messages += new
            if prompt is not None:
                ep.split(prompt)
            else:
                ep.add_inserted(delta or [])
            key = f"{ep.group}/{ep.member}/{ep.turns}"
            seed = None if self.sampling.seed is None else prompt_seed(self.sampling.seed, key)
            try:
                c = await self.batcher.generate(Request(ep.context(), 1, seed), self.sampling)
            except Exception as err:  # the engine failed this batch: not the model's doing
                raise OutsideModel(f"engine: {type(err).__name__}: {err}") from err
            ep.add_sampled(c)
            parsed = append_turn(ep, c, self.decode, ep.bridge.tool_format)
        if ep.finish == "stop":  # a last turn cut by its token limit stays "length"
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
            ep.fail(f"env_response failed ({err.kind}: {err.detail})", outside=True)
            return None
        finally:
            ep.env_s += time.perf_counter() - start
        return new  # type: ignore[no-any-return]
