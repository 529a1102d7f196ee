"""The public environment contract: `rltrain.Environment(dataset, reward_funcs, ...)`.

Never imports torch: environments are researchers' code and stay light. Everything that calls
researchers' functions (`call`, `respond`, `run_tool`) runs in a worker process (envs/workers.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]
RewardFunc = Callable[..., Any]
EnvResponse = Callable[[list[Message], dict[str, Any]], Any]

# Keyword arguments a reward function may declare; it receives only the ones it names.
ROLLOUT_ARGS = ("prompt", "completion", "answer", "info", "state")
MULTI_TURN_MAX_TURNS = 10  # the default when env_response or tools make an environment multi-turn


@dataclass(frozen=True)
class Row:
    """One dataset row, normalised: chat messages to send, plus what the reward needs."""

    prompt: list[Message]
    answer: Any = None
    info: Any = None

    @property
    def key(self) -> str:
        """A short stable id of the prompt, for records (which prompt a rollout answered)."""
        text = json.dumps(self.prompt, sort_keys=True, default=str)
        return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


@dataclass
class Rollout:
    """What reward functions see of one completion: the text (single-turn) or the messages after the
    prompt (multi-turn: the assistant's turns and the environment's), and the episode's state."""

    completion: str | list[Message]
    state: dict[str, Any] = field(default_factory=dict)


class NonFiniteReward(ValueError):
    """A reward function returned NaN or infinity."""


def _to_rows(dataset: Any, system_prompt: str | None, what: str) -> list[Row]:
    rows: list[Row] = []
    for i, raw in enumerate(dataset):
        if not isinstance(raw, dict):
            raise TypeError(f"{what} row {i}: expected a dict, got {type(raw).__name__}")
        if "prompt" in raw and raw["prompt"] is not None:
            prompt = raw["prompt"]
            if isinstance(prompt, str):
                prompt = [{"role": "user", "content": prompt}]
            messages = [dict(m) for m in prompt]
        elif "question" in raw:
            messages = [{"role": "user", "content": str(raw["question"])}]
        else:
            raise ValueError(f"{what} row {i}: needs a 'question' (text) or a 'prompt' (chat messages)")
        if system_prompt and not (messages and messages[0].get("role") == "system"):
            messages.insert(0, {"role": "system", "content": system_prompt})
        rows.append(Row(prompt=messages, answer=raw.get("answer"), info=raw.get("info")))
    if not rows:
        raise ValueError(f"{what} is empty")
    return rows


def _declared_args(func: RewardFunc) -> tuple[tuple[str, ...], bool]:
    """(the rollout arguments a reward function declares, whether it scores a whole group).

    A function that names a plural (`completions`, `answers`, ...) is called once per group with lists
    and returns one float per completion.
    """
    params = inspect.signature(func).parameters
    plural = [n for n in ROLLOUT_ARGS if f"{n}s" in params]
    singular = [n for n in ROLLOUT_ARGS if n in params]
    if plural and singular:
        raise ValueError(
            f"reward function {func.__name__}: mixes per-completion {singular} and group {plural} arguments"
        )
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return ROLLOUT_ARGS, False
    return (tuple(plural), True) if plural else (tuple(singular), False)


def resolve(value: Any) -> Any:
    """Await a coroutine from an async function (called in a worker, outside any event loop)."""
    if inspect.isawaitable(value):

        async def wait() -> Any:
            return await value

        return asyncio.run(wait())
    return value


def _finite(value: Any, label: str) -> float:
    if isinstance(value, (str, bytes)):  # float("1.0") would pass it: a bug in the function, said once
        kind = type(value).__name__
        raise TypeError(f"reward function {label} returned {kind} {value!r:.40}, not a number")
    number = float(value)
    if not math.isfinite(number):
        raise NonFiniteReward(f"reward function {label} returned {number}")
    return number


def _check_messages(value: Any) -> list[Message] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(m, dict) and "role" in m for m in value):
        raise TypeError(
            f"env_response must return a list of messages (dicts with a role) or None, got {value!r:.80}"
        )
    return [dict(m) for m in value]


class Environment:
    """A dataset of prompts and the reward functions that score completions of them.

    `dataset`: a list (or `datasets.Dataset`) of dicts with `question` (text, sent as a user message)
    or `prompt` (chat messages), and optional `answer` and `info`. Each reward function declares the
    keyword arguments it wants among `prompt`, `completion`, `answer`, `info`, `state` and returns a
    float, or declares the plurals (`completions`, ...) and returns one float per completion of a group;
    either kind may be async. The reward is the weighted sum (weights default to 1). `system_prompt`
    is prepended to every prompt.

    Multi-turn: `env_response(messages, state)` answers each assistant turn with messages to append,
    or None when the episode is over; `max_turns` caps the assistant turns (default 1, or 10 with
    `env_response` or `tools`); `tools` are typed, docstring'd Python functions the model may call in its
    family's tool-call format. `state` is a dict per episode, persisting across turns (it starts with
    the row's `answer` and `info`, and `turn`: assistant turns so far). For a multi-turn environment
    `completion` is the list of messages after the prompt.
    """

    def __init__(
        self,
        dataset: Iterable[dict[str, Any]],
        reward_funcs: Sequence[RewardFunc] | RewardFunc,
        reward_weights: Sequence[float] | None = None,
        system_prompt: str | None = None,
        eval_dataset: Iterable[dict[str, Any]] | None = None,
        *,
        env_response: EnvResponse | None = None,
        max_turns: int | None = None,
        tools: Sequence[Callable[..., Any]] = (),
    ) -> None:
        funcs = [reward_funcs] if callable(reward_funcs) else list(reward_funcs)
        if not funcs:
            raise ValueError("Environment needs at least one reward function")
        weights = [1.0] * len(funcs) if reward_weights is None else [float(w) for w in reward_weights]
        if len(weights) != len(funcs):
            raise ValueError(f"{len(funcs)} reward functions but {len(weights)} reward weights")
        self.reward_funcs = funcs
        self.reward_weights = weights
        self.system_prompt = system_prompt
        self.rows = _to_rows(dataset, system_prompt, "dataset")
        self.eval_rows = _to_rows(eval_dataset, system_prompt, "eval_dataset") if eval_dataset else None
        self._args = [_declared_args(f) for f in funcs]
        self.env_response = env_response
        self.tools = {t.__name__: t for t in tools}
        self.multi_turn = env_response is not None or bool(self.tools)
        self.max_turns = max_turns or (MULTI_TURN_MAX_TURNS if self.multi_turn else 1)
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")

    def __len__(self) -> int:
        return len(self.rows)

    def reward_names(self) -> list[str]:
        return [getattr(f, "__name__", f"reward_{i}") for i, f in enumerate(self.reward_funcs)]

    def is_group_func(self, index: int) -> bool:
        return self._args[index][1]

    def initial_state(self, row: Row) -> dict[str, Any]:
        return {"answer": row.answer, "info": row.info, "turn": 0}

    def tool_schemas(self) -> list[dict[str, Any]]:
        """OpenAI-style function schemas, from each tool's signature and docstring (as chat templates
        render them)."""
        from transformers.utils import get_json_schema

        return [get_json_schema(t) for t in self.tools.values()]

    def call(self, index: int, row: Row, rollouts: Sequence[Rollout | str]) -> list[float]:
        """Reward function `index` on `rollouts` of `row`: one value each (raises on non-finite)."""
        func, (names, group) = self.reward_funcs[index], self._args[index]
        label = self.reward_names()[index]
        items = [r if isinstance(r, Rollout) else Rollout(r, self.initial_state(row)) for r in rollouts]
        if group:
            n = len(items)
            available = {
                "prompts": [row.prompt] * n,
                "completions": [r.completion for r in items],
                "answers": [row.answer] * n,
                "infos": [row.info] * n,
                "states": [r.state for r in items],
            }
            values = list(resolve(func(**{f"{a}s": available[f"{a}s"] for a in names})))
            if len(values) != n:
                raise ValueError(f"reward function {label} returned {len(values)} values for {n} completions")
            return [_finite(v, label) for v in values]
        out = []
        for item in items:
            available = {
                "prompt": row.prompt,
                "completion": item.completion,
                "answer": row.answer,
                "info": row.info,
                "state": item.state,
            }
            out.append(_finite(resolve(func(**{a: available[a] for a in names})), label))
        return out

    def respond(
        self, messages: list[Message], state: dict[str, Any]
    ) -> tuple[list[Message] | None, dict[str, Any]]:
        """`env_response` for one turn; returns its messages (None: the episode is over) and the state."""
        if self.env_response is None:
            return None, state
        return _check_messages(resolve(self.env_response(messages, state))), state

    def run_tool(self, name: str, arguments: dict[str, Any]) -> str:
        """Call tool `name` with `arguments`; the result as the text of a tool message."""
        if name not in self.tools:
            raise KeyError(f"no tool named {name!r} (have {', '.join(self.tools) or 'none'})")
        result = resolve(self.tools[name](**arguments))
        return result if isinstance(result, str) else json.dumps(result, default=str)

    def combine(self, values: Sequence[Sequence[float]]) -> list[tuple[float, dict[str, float]]]:
        """Per-function values [func][completion] -> (weighted total, parts by function name) each."""
        names = self.reward_names()
        out = []
        for j in range(len(values[0]) if values else 0):
            parts = {names[i]: float(values[i][j]) for i in range(len(values))}
            out.append((sum(w * parts[n] for w, n in zip(self.reward_weights, names, strict=True)), parts))
        return out

    def score_group(
        self, row: Row, completions: Sequence[Rollout | str]
    ) -> list[tuple[float, dict[str, float]]]:
        """Weighted reward and per-function values of each completion (errors propagate)."""
        return self.combine([self.call(i, row, completions) for i in range(len(self.reward_funcs))])

    def score(self, row: Row, completion: Rollout | str) -> tuple[float, dict[str, float]]:
        return self.score_group(row, [completion])[0]
