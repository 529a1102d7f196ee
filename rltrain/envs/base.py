"""The public environment contract: `rltrain.Environment(dataset, reward_funcs, ...)`.

Never imports torch: environments are researchers' code and stay light.
"""

from __future__ import annotations

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


def _declared_args(func: RewardFunc) -> tuple[str, ...]:
    params = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return ROLLOUT_ARGS
    return tuple(name for name in ROLLOUT_ARGS if name in params)


class Environment:
    """A dataset of prompts and the reward functions that score completions of them.

    `dataset`: a list (or `datasets.Dataset`) of dicts with `question` (text, sent as a user message)
    or `prompt` (chat messages), and optional `answer` and `info`. Each reward function declares the
    keyword arguments it wants among `prompt`, `completion`, `answer`, `info` and returns a float; the
    reward is the weighted sum (weights default to 1). `system_prompt` is prepended to every prompt.
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

    def score(self, row: Row, completion: str) -> tuple[float, dict[str, float]]:
        """Weighted reward of one completion and each function's own value (by function name)."""
        available = {"prompt": row.prompt, "completion": completion, "answer": row.answer, "info": row.info}
        total = 0.0
        parts: dict[str, float] = {}
        for func, weight, names, label in zip(
            self.reward_funcs, self.reward_weights, self._args, self.reward_names(), strict=True
        ):
            value = float(func(**{n: available[n] for n in names}))
            if not math.isfinite(value):
                raise ValueError(f"reward function {label} returned {value}")
            parts[label] = value
            total += weight * value
        return total, parts

    def score_group(self, row: Row, completions: Sequence[str]) -> list[tuple[float, dict[str, float]]]:
        return [self.score(row, c) for c in completions]
