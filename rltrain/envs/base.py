"""The public environment contract: `rltrain.Environment(dataset, reward_funcs, ...)`.

Never imports torch: environments are researchers' code and stay light.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Message = dict[str, str]
RewardFunc = Callable[..., Any]

# Keyword arguments a reward function may declare; it receives only the ones it names.
ROLLOUT_ARGS = ("prompt", "completion", "answer", "info")


@dataclass(frozen=True)
class Row:
    """One dataset row, normalised: chat messages to send, plus what the reward needs."""

    prompt: list[Message]
    answer: Any = None
    info: Any = None


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


def _resolve(value: Any) -> Any:
    """Await a coroutine from an async reward function (we run in a worker thread, outside any loop)."""
    if inspect.isawaitable(value):

        async def wait() -> Any:
            return await value

        return asyncio.run(wait())
    return value


class NonFiniteReward(ValueError):
    """A reward function returned NaN or infinity."""


def _finite(value: Any, label: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise NonFiniteReward(f"reward function {label} returned {number}")
    return number


class Environment:
    """A dataset of prompts and the reward functions that score completions of them.

    `dataset`: a list (or `datasets.Dataset`) of dicts with `question` (text, sent as a user message)
    or `prompt` (chat messages), and optional `answer` and `info`. Each reward function declares the
    keyword arguments it wants among `prompt`, `completion`, `answer`, `info` and returns a float — or
    declares the plurals (`completions`, `answers`, ...) and returns one float per completion of a
    group; either kind may be async. The reward is the weighted sum (weights default to 1).
    `system_prompt` is prepended to every prompt.
    """

    def __init__(
        self,
        dataset: Iterable[dict[str, Any]],
        reward_funcs: Sequence[RewardFunc] | RewardFunc,
        reward_weights: Sequence[float] | None = None,
        system_prompt: str | None = None,
        eval_dataset: Iterable[dict[str, Any]] | None = None,
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

    def __len__(self) -> int:
        return len(self.rows)

    def reward_names(self) -> list[str]:
        return [getattr(f, "__name__", f"reward_{i}") for i, f in enumerate(self.reward_funcs)]

    def is_group_func(self, index: int) -> bool:
        return self._args[index][1]

    def call(self, index: int, row: Row, completions: Sequence[str]) -> list[float]:
        """Reward function `index` on `completions` of `row`: one value each (raises on non-finite)."""
        func, (names, group) = self.reward_funcs[index], self._args[index]
        label = self.reward_names()[index]
        if group:
            n = len(completions)
            available = {
                "prompts": [row.prompt] * n,
                "completions": list(completions),
                "answers": [row.answer] * n,
                "infos": [row.info] * n,
            }
            values = list(_resolve(func(**{f"{a}s": available[f"{a}s"] for a in names})))
            if len(values) != n:
                raise ValueError(f"reward function {label} returned {len(values)} values for {n} completions")
            return [_finite(v, label) for v in values]
        out = []
        for completion in completions:
            available = {
                "prompt": row.prompt,
                "completion": completion,
                "answer": row.answer,
                "info": row.info,
            }
            out.append(_finite(_resolve(func(**{a: available[a] for a in names})), label))
        return out

    def combine(self, values: Sequence[Sequence[float]]) -> list[tuple[float, dict[str, float]]]:
        """Per-function values [func][completion] -> (weighted total, parts by function name) each."""
        names = self.reward_names()
        out = []
        for j in range(len(values[0]) if values else 0):
            parts = {names[i]: float(values[i][j]) for i in range(len(values))}
            out.append((sum(w * parts[n] for w, n in zip(self.reward_weights, names, strict=True)), parts))
        return out

    def score_group(self, row: Row, completions: Sequence[str]) -> list[tuple[float, dict[str, float]]]:
        """Weighted reward and per-function values of each completion (errors propagate)."""
        return self.combine([self.call(i, row, completions) for i in range(len(self.reward_funcs))])

    def score(self, row: Row, completion: str) -> tuple[float, dict[str, float]]:
        return self.score_group(row, [completion])[0]
