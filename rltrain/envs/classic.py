"""Classic verifiers environments (0.1.x: SingleTurnEnv, MultiTurnEnv, ToolEnv, Rubric) behind rltrain's
worker contract: `describe`, `call`, `respond`, `run_tool`.

Runs in the environment's own interpreter (envs/foreign_worker.py), never in the trainer's: standard
library only at import, verifiers is reached through the environment object itself. rltrain samples every
assistant turn; this module plays the rest of verifiers' rollout loop one call at a time. A worker keeps
nothing between calls (any worker of the pool may take the next one), so each call rebuilds verifiers'
`State` from the row, the conversation and the environment's own state keys, which travel with the
episode as plain data.

Written against verifiers 0.1.14, whose loop is: setup_state; then per assistant turn, the stop
conditions (`is_completed(state)`), then `env_response(messages, state) -> messages`; a
`final_env_response` in the state ends the episode and joins the completion. The older signatures
(`is_completed(messages, state)`, `env_response -> (messages, state)`) are accepted too, but releases
whose `init_state` differs from 0.1.14's are not covered (untested).
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

BASES = ("ToolEnv", "StatefulToolEnv", "SingleTurnEnv", "MultiTurnEnv", "Environment")
DEFAULT_MAX_TURNS = 10  # rltrain's multi-turn default, for a MultiTurnEnv without a limit (-1)
ROW = "_rltrain_row"  # the state key rltrain's side fills: the row's key and prompt length
SAVED = "_vf"  # the environment's own state keys, as plain data
FINAL = "_vf_final"  # a final_env_response: shown to the reward functions, never to the model
# State keys verifiers' loop owns: rebuilt on every call, never carried
LOOP_KEYS = {"is_completed", "is_truncated", "stop_condition", "final_env_response", "prompt_too_long"}
LOOP_KEYS |= {"timed_out", "advantage", "reward", "metrics", "completion", "trajectory", "error"}


def classic_base(obj: Any) -> str | None:
    """The classic verifiers base class `obj` derives from (by the MRO, not its module), or None."""
    for cls in type(obj).__mro__:
        module = getattr(cls, "__module__", "") or ""
        if module.split(".")[0] == "verifiers" and ".v1" not in module and cls.__name__ in BASES:
            return cls.__name__
    return None


def plain(value: Any) -> Any:
    """JSON-like data the trainer's interpreter can unpickle (it has none of verifiers' classes)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [plain(v) for v in value]
    if hasattr(value, "model_dump"):
        return plain(value.model_dump(exclude_none=True))
    return repr(value)


def _strip_none(message: dict[str, Any]) -> dict[str, Any]:
    # datasets unify message columns, so a user message may carry tool_calls=None
    return {k: v for k, v in message.items() if v is not None}


def _reward_funcs(rubric: Any) -> Iterator[tuple[Any, Callable[..., Any], float]]:
    """(owning rubric, function, weight) of a rubric or a RubricGroup, in verifiers' order."""
    if hasattr(rubric, "rubrics"):
        for child in rubric.rubrics:
            yield from _reward_funcs(child)
        return
    yield from zip([rubric] * len(rubric.funcs), rubric.funcs, rubric.weights, strict=True)


def _is_group(rubric: Any, func: Callable[..., Any]) -> bool:
    check = getattr(rubric, "_is_group_func", None)  # verifiers' own rule, where it has one
    if callable(check):
        return bool(check(func))
    return bool(set(inspect.signature(func).parameters) & {"states", "prompts", "completions", "answers"})


def _with_tool_ids(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool-call ids where rltrain's messages lack them (verifiers' ToolMessage requires one)."""
    out, pending = [], []
    for i, raw in enumerate(messages):
        message = _strip_none(dict(raw))
        if message.get("role") == "assistant" and message.get("tool_calls"):
            calls = []
            for k, call in enumerate(message["tool_calls"]):
                call = dict(call)
                call["id"] = call.get("id") or f"call_{i}_{k}"
                calls.append(call)
            message["tool_calls"], pending = calls, [c["id"] for c in calls]
        elif message.get("role") == "tool" and not message.get("tool_call_id"):
            message["tool_call_id"] = pending.pop(0) if pending else f"call_{i}"
        out.append(message)
    return out


class _NoModel:
    """Stands in for verifiers' model client: rltrain samples every turn itself."""

    @staticmethod
    def make() -> Any:
        from verifiers.clients import Client

        async def refuse(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("the model's turns are sampled by rltrain, not by the environment")

        methods = ("to_native_tool", "to_native_prompt", "get_native_response")
        body: dict[str, Any] = {name: refuse for name in methods}
        body |= {"raise_from_native_response": refuse, "from_native_response": refuse, "close": refuse}
        body["setup_client"] = lambda self, config: None
        return type("RltrainSamples", (Client,), body)(None)


async def _named(func: Callable[..., Any], objects: dict[str, Any]) -> Any:
    """`func` with the score objects it names (all of them if it takes **kwargs), awaited if async."""
    params = inspect.signature(func).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        objects = {k: v for k, v in objects.items() if k in params}
    value = func(**objects)
    return await value if inspect.isawaitable(value) else value


class ClassicEnv:
    """One classic verifiers environment, answering the worker protocol's calls."""

    def __init__(self, vf_env: Any) -> None:
        from rltrain.envs.base import Row

        self.env, self.base = vf_env, classic_base(vf_env)
        if self.base in (None, "Environment", "StatefulToolEnv"):
            raise TypeError(
                f"{type(vf_env).__name__}: rltrain runs classic SingleTurnEnv, MultiTurnEnv and ToolEnv "
                f"environments; this one derives from {self.base or 'none of them'}"
            )
        self.loop = asyncio.new_event_loop()  # one per worker: environments may hold loop-bound clients
        self.funcs = list(_reward_funcs(vf_env.rubric))
        train, held_out = vf_env.build_dataset(), vf_env.build_eval_dataset()
        if train is None and held_out is None:
            raise ValueError(f"{type(vf_env).__name__}: has neither a dataset nor an eval_dataset")
        self.records = (train if train is not None else held_out).to_list()
        self.eval_records = held_out.to_list() if train is not None and held_out is not None else None
        self.by_key: dict[str, dict[str, Any]] = {}
        for record in [*self.records, *(self.eval_records or [])]:
            self.by_key.setdefault(Row(self._prompt(record)).key, record)
        self.client = _NoModel.make()

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    @staticmethod
    def _prompt(record: dict[str, Any]) -> list[dict[str, Any]]:
        prompt = record["prompt"]
        if isinstance(prompt, str):
            return [{"role": "user", "content": prompt}]
        return [_strip_none(plain(m)) for m in prompt]

    def _row(self, record: dict[str, Any]) -> dict[str, Any]:
        info = record.get("info")
        info = json.loads(info) if isinstance(info, str) and info.startswith("{") else info
        return {"prompt": self._prompt(record), "answer": plain(record.get("answer")), "info": plain(info)}

    def describe(self) -> dict[str, Any]:
        """What the trainer needs to know of the environment, as plain data."""
        import verifiers

        tools = [
            {"type": "function", "function": plain(t)} for t in (getattr(self.env, "tool_defs", None) or [])
        ]
        single = self.base == "SingleTurnEnv"
        turns = 1 if single else (self.env.max_turns if self.env.max_turns > 0 else DEFAULT_MAX_TURNS)
        return {
            "kind": f"verifiers {verifiers.__version__} {self.base}",
            "rows": [self._row(r) for r in self.records],
            "eval_rows": [self._row(r) for r in self.eval_records] if self.eval_records else None,
            "reward_names": [getattr(f, "__name__", f"reward_{i}") for i, (_, f, _) in enumerate(self.funcs)],
            "reward_weights": [float(w) for _, _, w in self.funcs],
            "group": [_is_group(r, f) for r, f, _ in self.funcs],
            "multi_turn": not single,
            "max_turns": int(turns),
            "tools": tools if self.base == "ToolEnv" else [],
            "env_response": not single,
        }

    async def _rebuild(
        self, record: dict[str, Any], conversation: list[dict[str, Any]], carried: dict[str, Any] | None
    ) -> tuple[Any, list[Any], set[str]]:
        """verifiers' state for `record` after `conversation`; the keys its loop owns."""
        import copy

        from verifiers.utils.message_utils import normalize_messages

        state = await self.env.init_state(copy.deepcopy(record), self.client, "rltrain", None)
        owned = set(dict.keys(state)) | LOOP_KEYS
        if carried is None:
            await self.env.setup_state(state)  # the episode's first call: what verifiers does first
        else:
            for key, value in carried.items():
                state[key] = value
        messages = normalize_messages(_with_tool_ids(conversation))
        start = len(self._prompt(record))
        state["trajectory"] = [
            {"prompt": messages[:i], "completion": [messages[i]], "response": None, "tokens": None}
            | {"reward": None, "advantage": None, "is_truncated": False, "extras": {}}
            | {"trajectory_id": state.get("trajectory_id", "")}
            for i in range(start, len(messages))
            if messages[i].role == "assistant"
        ]
        return state, messages, owned

    def _record(self, state: dict[str, Any]) -> dict[str, Any]:
        key = (state.get(ROW) or {}).get("key")
        if key not in self.by_key:
            raise KeyError(f"no row of this environment has key {key!r} (the trainer's rows differ)")
        return self.by_key[key]

    @staticmethod
    def _carry(state: Any, owned: set[str]) -> dict[str, Any]:
        return {k: plain(v) for k, v in dict.items(state) if k not in owned}

    def respond(
        self, messages: list[dict[str, Any]], state: dict[str, Any]
    ) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
        """After an assistant turn: None if a stop condition holds, else the environment's messages."""
        return self._run(self._respond(messages, state))  # type: ignore[no-any-return]

    async def _respond(
        self, messages: list[dict[str, Any]], state: dict[str, Any]
    ) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
        vf_state, vf_messages, owned = await self._rebuild(self._record(state), messages, state.get(SAVED))
        out = dict(state)
        done = self.env.is_completed
        stop = await (
            done(vf_messages, vf_state)
            if "messages" in inspect.signature(done).parameters
            else done(vf_state)
        )
        if not stop:
            new = await self.env.env_response(vf_messages, vf_state)
            if isinstance(new, tuple):  # older 0.1 releases return (messages, state)
                new, vf_state = new
        out[SAVED] = self._carry(vf_state, owned)
        out["stop_condition"] = vf_state.get("stop_condition")
        final = vf_state.get("final_env_response")
        if final is not None:
            out[FINAL] = [_strip_none(plain(m)) for m in final]
        if stop or final is not None:
            return None, out
        return [_strip_none(plain(m)) for m in new], out

    def call(self, index: int, row: Any, rollouts: list[Any]) -> list[float]:
        """Reward function `index` on `rollouts` of `row` (one value each); its errors propagate."""
        return self._run(self._call(index, row, rollouts))  # type: ignore[no-any-return]

    async def _call(self, index: int, row: Any, rollouts: list[Any]) -> list[float]:
        from rltrain.envs.base import NonFiniteReward

        rubric, func, _ = self.funcs[index]
        if row.key not in self.by_key:
            raise KeyError(f"no row of this environment has key {row.key!r}")
        states = [await self._final_state(self.by_key[row.key], row, r) for r in rollouts]
        if _is_group(rubric, func):
            values = list(await _named(func, rubric.group_score_objects(states)))
            if len(values) != len(states):
                raise ValueError(
                    f"{func.__name__} returned {len(values)} values for {len(states)} completions"
                )
        else:
            values = [await _named(func, rubric.score_objects(s)) for s in states]
        out = [float(v) for v in values]
        if any(v != v or v in (float("inf"), float("-inf")) for v in out):
            raise NonFiniteReward(f"reward function {func.__name__} returned {out}")
        return out

    async def _final_state(self, record: dict[str, Any], row: Any, rollout: Any) -> Any:
        from verifiers.utils.message_utils import normalize_messages

        completion, state = (
            (rollout.completion, rollout.state) if hasattr(rollout, "state") else (rollout, {})
        )
        if isinstance(completion, str):
            completion = [{"role": "assistant", "content": completion}]
        vf_state, messages, _ = await self._rebuild(record, [*row.prompt, *completion], state.get(SAVED))
        final = normalize_messages(state.get(FINAL) or [])
        vf_state["completion"] = [*messages[len(row.prompt) :], *final]
        vf_state["is_completed"], vf_state["stop_condition"] = True, state.get("stop_condition")
        return vf_state

    def run_tool(self, name: str, arguments: dict[str, Any]) -> str:
        """ToolEnv's tool `name`: its result as text; an error is the environment's error_formatter text,
        unless it is one of its stop_errors."""
        tool_map = getattr(self.env, "tool_map", {})
        if name not in tool_map:
            raise KeyError(f"no tool named {name!r} (have {', '.join(tool_map) or 'none'})")

        async def run() -> Any:
            value = tool_map[name](**arguments)
            return await value if inspect.isawaitable(value) else value

        try:
            result = self._run(run())
        except Exception as err:
            if any(isinstance(err, t) for t in getattr(self.env, "stop_errors", [])):
                raise
            return str(self.env.error_formatter(err))
        return result if isinstance(result, str) else str(result)
