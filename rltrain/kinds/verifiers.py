"""The verifiers 0.4 kind (tasksets, harnesses, traces: `[[env]] taskset = {...}`), loaded by
envs/verifiers_v1.py; its episodes are sampled by the run's engine with its current adapter.

verifiers runs its own agent loop (a harness program, MCP tool servers, its interception server); its
train client asks for tokens over HTTP. Here that HTTP is rltrain's endpoint (rollout/endpoint.py) in
front of the run's backend, on an event loop of its own thread that lives as long as the run: the
environment is served once (tool servers started once), and each step's episodes run there while the
training thread waits. Each trace's branches come back as token ids, a sampled mask and the sampler's
logprobs, which become `Sample`s exactly as rltrain's own multi-turn episodes do.

The endpoint's secret is handed to verifiers' client only (envs/verifiers_v1.hand_key), never put in
os.environ, where every process started later (environment workers, tool servers, code a model wrote)
would read it. An episode that failed for a reason outside the model (a timeout, the sandbox, the
interception server, the environment's own hooks, the engine) is kept in the record but not trained on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
from collections import Counter
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from rltrain.config import EnvConfig
from rltrain.envs.base import Environment, Message, Row
from rltrain.envs.scoring import GroupScores
from rltrain.envs.verifiers_v1 import V1Env, hand_key, load_v1, prepare_offline_harness
from rltrain.kinds.base import EnvSlot, Item, Kind, PromptLengths, RunnerContext
from rltrain.rollout.episodes import Episode, Part
from rltrain.rollout.prompting import PromptEncoder
from rltrain.rollout.warm_python import WarmPython
from rltrain.types import SamplingParams

T = TypeVar("T")
log = logging.getLogger("rltrain")
MODEL_NAME = "rltrain-policy"
PROMPT_ESTIMATE = 512  # verifiers renders its own prompts: a budget for sizing, not a measurement
# verifiers' error types that are the model's doing (a reward that raised on its answer); a
# ProviderError is the model's when the endpoint answered 400 (its conversation outgrew the context)
MODEL_ERRORS = frozenset({"TaskError"})


class VerifiersEnv:
    """A verifiers environment: its tasks are the rows the prompt order draws; it renders, plays and
    scores its own episodes (no worker processes: verifiers runs its own code)."""

    kind = "verifiers"

    def __init__(self, v1: V1Env) -> None:
        self.v1 = v1
        self.rows: list[Row] = v1.rows
        self.eval_rows = v1.eval_rows
        self.max_turns = v1.max_turns

    def prompt_lengths(self, encoder: PromptEncoder) -> PromptLengths:
        return PromptLengths([PROMPT_ESTIMATE], measured=False)

    def worker_spec(self, name: str) -> None:
        return None

    def start_runner(self, ctx: RunnerContext) -> V1Runner:
        return V1Runner(ctx)


@functools.cache
def _shape() -> Environment:
    """What an Episode reads of its environment: that it is multi-turn (its record keeps the turns);
    verifiers plays and scores the episode itself."""
    return Environment([{"question": "-"}], _unscored, env_response=_no_reply)


def _unscored(completion: Any) -> float:
    return 0.0


def _no_reply(messages: list[Message], state: dict[str, Any]) -> None:
    return None


def _v1(slot: EnvSlot) -> V1Env:
    if not isinstance(slot.env, VerifiersEnv):
        raise TypeError(f"environment {slot.name} is of kind {slot.env.kind}, not verifiers")
    return slot.env.v1


class V1Runner:
    def __init__(self, ctx: RunnerContext) -> None:
        from rltrain.rollout.batcher import Batcher
        from rltrain.rollout.endpoint import TOKEN_VAR, Endpoint  # aiohttp: only when a run has one

        self.tokenizer_path, self.timeout_s = ctx.model_path, ctx.limits.episode_timeout_s
        self.error_reward = ctx.scorer.error_reward
        backend, max_context = ctx.backend, ctx.limits.max_context
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="verifiers", daemon=True)
        self._thread.start()
        self._stack = contextlib.AsyncExitStack()
        self._serving: set[int] = set()
        self._logged: set[str] = set()
        self._in_flight: set[concurrent.futures.Future[Any]] = set()
        self._warm = _warm_python(prepare_offline_harness())
        if self._warm is not None:  # each turn's chat program: a fork of a warm interpreter
            prepare_offline_harness(self._warm.interpreter)
        self.batcher = Batcher(backend)
        self.endpoint = Endpoint(self.batcher, MODEL_NAME, max_context, len(ctx.encoder.tokenizer))
        self._run(self._start())
        self.token_var = TOKEN_VAR
        hand_key(TOKEN_VAR, self.endpoint.token)  # to verifiers' train client, in this process only

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        self._in_flight.add(future)
        try:
            return future.result()
        finally:
            self._in_flight.discard(future)

    def abort(self) -> None:
        """Cancel the episodes in flight (the run is failing): whoever waits for them gets an error now."""
        for future in list(self._in_flight):
            future.cancel()

    async def _start(self) -> None:
        self.batcher.start()
        await self.endpoint.start()

    def episodes(self, items: Sequence[Item], n: int, sampling: SamplingParams) -> list[list[Episode]]:
        """`n` episodes per item, one verifiers environment after the other."""
        out: dict[int, list[Episode]] = {}
        for name in dict.fromkeys(it.slot.name for it in items):
            idx = [i for i, it in enumerate(items) if it.slot.name == name]
            rows = [(items[i].group, items[i].row) for i in idx]
            done = self._run(self._episodes(items[idx[0]].slot, rows, n, sampling))
            out.update(zip(idx, done, strict=True))
        return [out[i] for i in range(len(items))]

    def score(self, items: Sequence[Item], groups: Sequence[list[Episode]]) -> list[GroupScores]:
        """verifiers scored its own traces; a failed or unscored episode scores error_reward."""
        out = []
        for episodes in groups:
            failed = [ep.error is not None or ep.reward is None for ep in episodes]
            rewards = [
                self.error_reward if bad else float(ep.reward or 0.0)
                for bad, ep in zip(failed, episodes, strict=True)
            ]
            parts = [ep.reward_parts for ep in episodes]
            out.append(GroupScores(rewards, parts, errored=sum(failed), failed=failed))
        return out

    async def _episodes(
        self, slot: EnvSlot, rows: Sequence[tuple[int, Row]], n: int, sampling: SamplingParams
    ) -> list[list[Episode]]:
        env = _v1(slot)
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
        refused = self.endpoint.refused
        out = [
            [_episode(vf_ep, slot, row, gid, j, refused=refused) for j, vf_ep in enumerate(eps)]
            for (gid, row), eps in zip(rows, done, strict=True)
        ]
        for error in (ep.error for group in out for ep in group if ep.error):
            kind = f"{slot.name}:{error.split(':')[0]}"
            if kind not in self._logged:  # each kind once: the records keep every episode's error
                self._logged.add(kind)
                log.warning("environment %s: an episode failed: %s", slot.name, error)
        return out

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
            api_key_var=self.token_var,
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
            hand_key(self.token_var, None)
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


def _episode(
    vf_ep: Any, slot: EnvSlot, row: Row, group: int, member: int, *, refused: Counter[str]
) -> Episode:
    """A verifiers episode as rltrain's: each trainable branch one sample, the trace's reward, and the
    sampling overrides the endpoint refused its traces (taken out of `refused`)."""
    ep = Episode(slot.name, _shape(), row, group, member, None, [])
    ep.messages, ep.shown_from = list(row.prompt), 0  # records keep the whole conversation verifiers saw
    if vf_ep is None:
        ep.fail("episode timed out", outside=True, finish="timeout")
        return ep
    ep.refused_sampling = sum(refused.pop(str(t.id), 0) for t in vf_ep.traces)
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
        if not errors:
            ep.fail("the episode produced no trainable tokens", outside=True)
        else:
            ep.fail(_error_line(errors[0], _v1(slot)), outside=not _models_doing(errors[0]))
    return ep


def _models_doing(error: Any) -> bool:
    """Whether a verifiers error is the model's doing (scored error_reward and trained on)."""
    if error.type == "ProviderError":
        return getattr(error, "status_code", None) == 400
    return str(error.type) in MODEL_ERRORS


def _load(entry: EnvConfig) -> VerifiersEnv:
    return VerifiersEnv(load_v1(entry.verifiers_config(), entry.renderer, entry.allow_bash))


KIND = Kind("verifiers", claims=lambda entry: entry.taskset is not None, load=_load)


def _error_line(error: Any, env: Any) -> str:
    """The error's type and message: a closed connection alone does not say why it closed."""
    line = f"{error.type}: {error.message}" if error.message else str(error.type)
    capacity = getattr(env, "capacity", None)
    if "ConnectionClosed" in line and capacity is not None:
        line += f" (its OpenEnv server closed the session: it holds {capacity} at once, max_concurrent_envs)"
    return line[:400]
