"""OpenEnv environments, natively: each episode is one session of an OpenEnv server's `/ws` socket.

reset(seed from the row) → the observation is the user message; each reply of the model → an action
(envs/openenv_server.py: ActionMapper) → step → the next observation, a reward, done. A reply that is no
action is answered with an error message to the model and counted; nothing is stepped. The episode's
reward is the sum or the last of its step rewards; `max_turns` caps environments that never end.

`OpenEnvClient` owns the server for the run and bounds concurrent sessions by what the server accepts
(`max_concurrent_envs`, found by opening sessions at start). A session the server refuses at capacity is a
`CapacityError` naming the limit, never a bare closed connection. The rows are the real first observations
(one reset per seed at start), so the prompt budget is measured, not guessed.

Never imports torch; uses `websockets` (a dependency of uvicorn and vLLM) in the trainer's venv.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from rltrain.envs.base import Message, Row
from rltrain.envs.openenv_server import ActionMapper, OpenEnvError, OpenEnvServer, observation_text

# the conversation so far -> the model's next reply (None: the model cannot go on, its context is full)
Reply = Callable[[list[Message]], Awaitable[str | None]]
PROBE_LIMIT = 64  # sessions opened at start to find the server's capacity


class CapacityError(OpenEnvError):
    def __init__(self, url: str, max_sessions: int | None, detail: str) -> None:
        limit = f"max_concurrent_envs = {max_sessions}" if max_sessions is not None else "its session limit"
        super().__init__(f"OpenEnv server {url} refused a session: at capacity ({limit}): {detail}")
        self.max_sessions = max_sessions


@dataclass(frozen=True)
class OpenEnvSpec:
    """`[[env]] openenv = {...}`: a running server's `url`, or a `path` to serve with `python`."""

    url: str | None = None
    path: str | None = None
    python: str | None = None
    app: str | None = None  # module:app (default: openenv.yaml's, else server.app:app)
    rows: int = 16  # seeds seed, seed+1, ...: one row each
    seed: int = 0
    reset: dict[str, Any] = field(default_factory=dict)  # more keyword arguments for reset
    reward: Literal["sum", "last"] = "sum"
    max_turns: int = 8
    max_concurrent: int | None = None  # default: what the server accepts, up to PROBE_LIMIT
    timeout_s: float = 60.0  # one reset or step


@dataclass(frozen=True)
class StepResult:
    text: str  # the next user message: the observation, or the error for a reply that is no action
    reward: float | None = None
    done: bool = False
    invalid: bool = False  # the reply was not an action: nothing was stepped


class OpenEnvSession:
    """One episode's socket: `await reset(seed) -> text`, `await step(reply) -> StepResult`."""

    def __init__(self, url: str, ws_url: str, mapper: ActionMapper, timeout_s: float) -> None:
        self.url, self.ws_url, self.mapper, self.timeout_s = url, ws_url, mapper, timeout_s
        self.ws: ClientConnection | None = None

    async def __aenter__(self) -> OpenEnvSession:
        try:
            self.ws = await connect(self.ws_url, open_timeout=self.timeout_s, max_size=2**24)
        except (OSError, TimeoutError, WebSocketException) as err:
            raise OpenEnvError(f"OpenEnv server {self.url}: cannot open a session: {err}") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self.ws.send(json.dumps({"type": "close"}))
            await self.ws.close()

    async def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.ws is not None, "use the session as `async with`"
        with contextlib.suppress(ConnectionClosed):  # a refused session sends an error frame, then closes
            await self.ws.send(json.dumps(message))
        try:
            raw = await asyncio.wait_for(self.ws.recv(), self.timeout_s)
        except ConnectionClosed as err:
            why = f"code {err.rcvd.code} {err.rcvd.reason!r}" if err.rcvd else "no close frame"
            raise OpenEnvError(f"OpenEnv server {self.url} closed the session ({why})") from None
        except TimeoutError:
            raise OpenEnvError(f"OpenEnv server {self.url}: no answer within {self.timeout_s:g}s") from None
        reply: dict[str, Any] = json.loads(raw)
        data = reply.get("data") or {}
        if reply.get("type") == "error" and data.get("code") == "CAPACITY_REACHED":
            raise CapacityError(self.url, data.get("max_sessions"), str(data.get("message", "")))
        return reply

    async def reset(self, seed: int | None, **kwargs: Any) -> str:
        reply = await self._ask({"type": "reset", "data": {"seed": seed, **kwargs}})
        if reply.get("type") != "observation":
            raise OpenEnvError(f"OpenEnv server {self.url}: reset failed: {_error(reply)}")
        return observation_text(reply["data"].get("observation") or {})

    async def step(self, reply: str) -> StepResult:
        try:
            action = self.mapper.to_action(reply)
        except ValueError as err:
            return StepResult(f"Error: {err}", invalid=True)
        answer = await self._ask({"type": "step", "data": action})
        if answer.get("type") == "error":  # the server's own validation: the model reads why, as above
            return StepResult(f"Error: the environment refused the action: {_error(answer)}", invalid=True)
        data = answer.get("data") or {}
        reward = data.get("reward")
        text = observation_text(data.get("observation") or {})
        return StepResult(text, None if reward is None else float(reward), bool(data.get("done")))


def _error(reply: dict[str, Any]) -> str:
    data = reply.get("data") or {}
    detail = data.get("errors") or ""
    return f"{data.get('code', '?')}: {data.get('message', reply)} {detail}".strip()[:500]


async def _probe(
    session: Callable[[], OpenEnvSession], want: int, seed: int | None, reset: dict[str, Any]
) -> int:
    """How many sessions the server holds at once, up to `want` (its refusal names its limit)."""
    opened: list[OpenEnvSession] = []
    try:
        for _ in range(want):
            opened.append(await session().__aenter__())
            try:
                await opened[-1].reset(seed, **reset)
            except CapacityError as err:
                return min(want, err.max_sessions or len(opened) - 1)
        return want
    finally:
        await asyncio.gather(*(s.__aexit__() for s in opened), return_exceptions=True)


def probe_capacity(url: str, want: int = PROBE_LIMIT, timeout_s: float = 30.0) -> int:
    """The capacity of a running OpenEnv server (a verifiers openenv taskset's `base_url`)."""
    server = OpenEnvServer(url)
    mapper = ActionMapper({})
    return asyncio.run(
        _probe(lambda: OpenEnvSession(server.url, server.ws_url, mapper, timeout_s), want, None, {})
    )


@dataclass
class EpisodeResult:
    messages: list[Message]  # after the prompt: the model's replies and the environment's observations
    reward: float = 0.0
    step_rewards: list[float] = field(default_factory=list)
    invalid_replies: int = 0
    turns: int = 0
    finish: str = "max_turns"  # done | max_turns | context | timeout | error
    error: str | None = None


class OpenEnvClient:
    """The run's OpenEnv environment: rows, and episodes bounded by the server's capacity."""

    def __init__(self, spec: OpenEnvSpec, server: OpenEnvServer) -> None:
        self.spec, self.server = spec, server
        self.mapper = ActionMapper(server.action_schema())
        self.capacity = 1
        # asyncio primitives belong to one event loop: one semaphore per loop that runs episodes
        self._limits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def open(cls, spec: OpenEnvSpec) -> OpenEnvClient:
        """Start (path + python) or connect to (url) the server, and find its capacity."""
        if spec.url:
            server = OpenEnvServer.connect(spec.url)
        elif spec.path and spec.python:
            server = OpenEnvServer.start(spec.path, spec.python, spec.app)
        else:
            raise ValueError("openenv needs a url, or a path and the python of its venv")
        try:
            client = cls(spec, server)
            want = spec.max_concurrent or PROBE_LIMIT
            client.capacity = asyncio.run(_probe(client.session, want, spec.seed, spec.reset))
        except BaseException:
            server.stop()
            raise
        return client

    def session(self) -> OpenEnvSession:
        return OpenEnvSession(self.server.url, self.server.ws_url, self.mapper, self.spec.timeout_s)

    def close(self) -> None:
        self.server.stop()

    def first_message(self, observation: str) -> Message:
        hint = self.mapper.instructions()
        return {"role": "user", "content": f"{observation}\n\n{hint}" if hint else observation}

    def rows(self) -> list[Row]:
        """One row per seed; its prompt is the real first observation (one reset each)."""
        seeds = range(self.spec.seed, self.spec.seed + self.spec.rows)

        async def first(seed: int) -> Row:
            async with self._slot(), self.session() as session:
                text = await session.reset(seed, **self.spec.reset)
            return Row([self.first_message(text)], None, {"seed": seed})

        async def all_rows() -> list[Row]:
            return list(await asyncio.gather(*(first(s) for s in seeds)))

        return asyncio.run(all_rows())

    def _slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if loop not in self._limits:
            self._limits[loop] = asyncio.Semaphore(self.capacity)
        return self._limits[loop]

    async def run_episode(self, row: Row, reply: Reply, timeout_s: float | None = None) -> EpisodeResult:
        """One episode of `row`: reset with its seed, then reply/step until done or max_turns (or `reply`
        gives None: finish "context"). `timeout_s` counts from the session's start (not the wait for a
        free one): past it, finish "timeout" with an error. Raises OpenEnvError for the server's
        failures (a CapacityError when it refuses the session)."""
        out = EpisodeResult(messages=[])
        async with self._slot(), self.session() as session:
            try:
                async with asyncio.timeout(timeout_s):
                    await self._play(session, row, reply, out)
            except TimeoutError:
                out.finish, out.error = "timeout", f"episode timed out after {timeout_s:g}s"
        rewards = out.step_rewards or [0.0]
        out.reward = sum(rewards) if self.spec.reward == "sum" else rewards[-1]
        return out

    async def _play(self, session: OpenEnvSession, row: Row, reply: Reply, out: EpisodeResult) -> None:
        seed = (row.info or {}).get("seed")
        first = self.first_message(await session.reset(seed, **self.spec.reset))
        if first["content"] != row.prompt[-1]["content"]:
            out.finish, out.error = (
                "error",
                f"reset(seed={seed}) gave another first observation than at start",
            )
            return
        while out.turns < self.spec.max_turns:
            text = await reply([*row.prompt, *out.messages])
            if text is None:
                out.finish = "context"
                return
            out.messages.append({"role": "assistant", "content": text})
            out.turns += 1
            result = await session.step(text)
            out.invalid_replies += result.invalid
            if result.reward is not None:
                out.step_rewards.append(result.reward)
            if result.done:
                out.finish = "done"
                return
            if out.turns < self.spec.max_turns:  # the last observation is never shown
                out.messages.append({"role": "user", "content": result.text})
