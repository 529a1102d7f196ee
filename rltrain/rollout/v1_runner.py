"""Episodes of verifiers 0.4 environments, sampled by the run's engine with its current adapter.

verifiers runs its own agent loop (a harness program, MCP tool servers, its interception server); its
train client asks for tokens over HTTP. Here that HTTP is rltrain's endpoint (rollout/endpoint.py) in
front of the run's backend, on an event loop of its own thread that lives as long as the run: the
environment is served once (tool servers started once), and each step's episodes run there while the
training thread waits. Each trace's branches come back as token ids, a sampled mask and the sampler's
logprobs, which become `Sample`s exactly as rltrain's own multi-turn episodes do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from rltrain.data import EnvSlot
from rltrain.envs.base import Row
from rltrain.envs.verifiers_v1 import V1Env, prepare_offline_harness
from rltrain.rollout.backend import RolloutBackend
from rltrain.rollout.batcher import Batcher
from rltrain.rollout.endpoint import TOKEN_VAR, Endpoint
from rltrain.rollout.episodes import Episode, Part
from rltrain.rollout.warm_python import WarmPython
from rltrain.types import SamplingParams

T = TypeVar("T")
log = logging.getLogger("rltrain")
MODEL_NAME = "rltrain-policy"


class V1Runner:
    def __init__(
        self, backend: RolloutBackend, tokenizer_path: str, max_context: int, episode_timeout_s: float
    ) -> None:
        self.tokenizer_path, self.timeout_s = tokenizer_path, episode_timeout_s
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="verifiers", daemon=True)
        self._thread.start()
        self._stack = contextlib.AsyncExitStack()
        self._serving: set[int] = set()
        self._warm = _warm_python(prepare_offline_harness())
        if self._warm is not None:  # each turn's chat program: a fork of a warm interpreter
            prepare_offline_harness(self._warm.interpreter)
        self.batcher = Batcher(backend)
        self.endpoint = Endpoint(self.batcher, MODEL_NAME, max_context)
        self._run(self._start())
        os.environ[TOKEN_VAR] = self.endpoint.token  # read by verifiers' train client, in this process

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def _start(self) -> None:
        self.batcher.start()
        await self.endpoint.start()

    def episodes(
        self, slot: EnvSlot, rows: Sequence[tuple[int, Row]], n: int, sampling: SamplingParams
    ) -> list[list[Episode]]:
        """`n` episodes for each (global group id, row) of one verifiers environment."""
        return self._run(self._episodes(slot, rows, n, sampling))

    async def _episodes(
        self, slot: EnvSlot, rows: Sequence[tuple[int, Row]], n: int, sampling: SamplingParams
    ) -> list[list[Episode]]:
        env: V1Env = slot.env  # type: ignore[assignment]
        if id(env) not in self._serving:  # tool servers and the interception server: once per run
            await self._stack.enter_async_context(env.vf_env.serving())
            self._serving.add(id(env))
        self.endpoint.begin_step(sampling)
        ctx = self._context(env, sampling)
        groups = []
        for _, row in rows:
            task = env.tasks[row.info["v1_task"]]
            groups.append([self._one(env, slot_, ctx) for slot_ in env.vf_env.slots(task, n)])
        done = await asyncio.gather(*(asyncio.gather(*g) for g in groups))
        return [
            [_episode(vf_ep, slot, row, gid, j) for j, vf_ep in enumerate(eps)]
            for (gid, row), eps in zip(rows, done, strict=True)
        ]

    async def _one(self, env: V1Env, run_slot: Any, ctx: Any) -> Any:
        try:
            return await asyncio.wait_for(env.vf_env.run_slot(run_slot, ctx), self.timeout_s)
        except TimeoutError:
            return None

    def _context(self, env: V1Env, sampling: SamplingParams) -> Any:
        import verifiers.v1 as vf
        from pydantic import TypeAdapter
        from renderers import RendererConfig

        renderer = env.renderer
        if isinstance(renderer, str):
            renderer = {"name": renderer}
        client = vf.TrainClientConfig(
            base_url=self.endpoint.base_url,
            renderer=TypeAdapter(RendererConfig).validate_python(renderer) if renderer else None,
            renderer_model_name=self.tokenizer_path,  # tokenize with the base model's own tokenizer
            api_key_var=TOKEN_VAR,
        )
        vf_sampling = vf.SamplingConfig(
            temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_tokens
        )
        return vf.ModelContext(model=MODEL_NAME, client=client, sampling=vf_sampling)

    def close(self) -> None:
        async def stop() -> None:
            try:
                await self._stack.aclose()
            finally:
                await self.endpoint.stop()
                await self.batcher.stop()

        try:
            self._run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            os.environ.pop(TOKEN_VAR, None)
            if self._warm is not None:
                prepare_offline_harness()  # a later runner must not reach for this one's zygote
                self._warm.close()


def _warm_python(program: str) -> WarmPython | None:
    """verifiers' null harness starts its chat program once per turn; an interpreter's start and
    imports were ~90% of a v1 step (bench_v1_taskset). Without the warm one: plain interpreters."""
    try:
        return WarmPython([program])
    except (OSError, RuntimeError) as err:
        log.info("notice: harness programs start cold (%s)", err)
        return None


def _episode(vf_ep: Any, slot: EnvSlot, row: Row, group: int, member: int) -> Episode:
    """A verifiers episode as rltrain's: each trainable branch one sample, the trace's reward."""
    ep = Episode(env_name=slot.name, env=slot.env, row=row, group=group, member=member, bridge=None, parts=[])  # type: ignore[arg-type]
    ep.messages, ep.shown_from = list(row.prompt), 0  # records keep the whole conversation verifiers saw
    if vf_ep is None:
        ep.error, ep.finish = "episode timed out", "timeout"
        return ep
    traces = [t for t in vf_ep.traces if getattr(t.agent, "trainable", True)] or list(vf_ep.traces)
    for trace in traces:
        for branch in trace.branches:
            if not branch.trainable:
                continue
            ids, mask, lps = list(branch.token_ids), list(branch.sampled_mask), list(branch.logprobs)
            first = mask.index(True) if True in mask else len(ids)
            ep.parts.append(Part(ids[:first], ids[first:], lps[first:], [int(m) for m in mask[first:]]))
            ep.input_tokens += first + sum(not m for m in mask[first:])
            ep.output_tokens += sum(mask)
        ep.messages = [m.model_dump(exclude_none=True) for m in trace.messages]
        ep.turns += len(trace.assistant_messages)
        ep.finish = str(trace.stop_condition or "done")
    if traces:
        ep.reward = sum(t.reward for t in traces) / len(traces)
        ep.reward_parts = {k: (v.score if v is not None else 0.0) for k, v in traces[0].rewards.items()}
        replies = traces[-1].assistant_messages
        ep.text = str(replies[-1].content or "") if replies else ""
    errors = list(vf_ep.errors) + [e for t in traces for e in t.errors]
    if not vf_ep.ok or not ep.parts:
        ep.error = errors[0].message[:300] if errors else "the episode produced no trainable tokens"
        ep.finish = "error"
    return ep
