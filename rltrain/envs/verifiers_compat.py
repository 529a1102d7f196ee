"""Run a `verifiers` environment (the classic API) as an `rltrain.Environment`.

Classic environments (`vf.SingleTurnEnv(dataset=..., system_prompt=..., parser=..., rubric=...)`, the
Environments Hub format, verifiers 0.1 to 0.3; in 0.3 it lives in `verifiers.legacy` and answers at
the old top-level names) are converted like this:

- rows: the environment's own formatted dataset (`get_dataset()`), whose `prompt` column already holds
  the chat messages with its system prompt and few-shot examples; the whole row rides along in `info`
  so the rubric sees the same `answer`, `info`, `task` and extra columns as in a verifiers rollout;
- rewards: one rltrain reward function per rubric function (same name, same weight, so metrics keep
  their names), each called the way `Rubric` calls it: keyword arguments picked by name from
  `rubric.score_objects(state)` (`prompt`, `completion` as chat messages, `answer`, `info`, `state`,
  `task`, `parser`, ...), sync or async; an exception scores 0.0, as in verifiers.

verifiers is not imported here unless the object came from it, so this module loads without it.
The v1 stack of verifiers 0.4 (`verifiers.v1`: tasksets, harnesses, traces) is a different model
and is refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import importlib
import inspect
import json
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

from rltrain.envs.base import Environment, Message

logger = logging.getLogger(__name__)

# Parameter names that mark a verifiers group-level reward function (scored over all rollouts at once).
_GROUP_PARAMS = {"states", "prompts", "completions", "answers", "tasks", "infos"}
# Where the whole verifiers row travels inside rltrain's `info`, to rebuild the rollout state.
_ROW_KEY = "verifiers_row"


def _verifiers_classes(obj: object) -> list[type]:
    return [c for c in type(obj).__mro__ if c.__module__.split(".")[0] == "verifiers"]


def _is_v1(obj: object) -> bool:
    return any(c.__module__.startswith("verifiers.v1") for c in _verifiers_classes(obj))


def is_verifiers_env(obj: object) -> bool:
    """True for a classic verifiers environment (by class, else by shape: a rubric and a dataset)."""
    if _is_v1(obj):
        return False
    if any(c.__name__ == "Environment" for c in _verifiers_classes(obj)):
        return True
    rubric = getattr(obj, "rubric", None)
    has_data = hasattr(obj, "get_dataset") or hasattr(obj, "dataset")
    return has_data and rubric is not None and hasattr(rubric, "funcs") and hasattr(obj, "parser")


def _run(awaitable: Any) -> Any:
    """Await a coroutine from sync code, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(awaitable)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, awaitable).result()


def _plain_messages(messages: Any) -> list[Message]:
    """Chat messages as plain dicts; Arrow fills absent message fields with None, which are dropped."""
    out: list[Message] = []
    for m in messages:
        raw = m if isinstance(m, Mapping) else m.model_dump()
        out.append({k: v for k, v in raw.items() if v is not None})
    return out


def _rows(dataset: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for raw in dataset:
        row = dict(raw)
        prompt = row.get("prompt")
        converted: dict[str, Any] = {"answer": row.get("answer"), "info": {_ROW_KEY: row}}
        if isinstance(prompt, list):
            converted["prompt"] = _plain_messages(prompt)
        elif isinstance(prompt, str):
            converted["prompt"] = prompt
        else:
            converted["question"] = row["question"]
        rows.append(converted)
    return rows


def _state(row: Mapping[str, Any], prompt: Any, completion: Any, state_cls: type) -> Any:
    """A verifiers State as `init_state` plus a one-turn rollout would leave it for the rubric."""
    data = copy.deepcopy(dict(row))  # reward functions may write to state; rows are shared
    if isinstance(data.get("info"), str):  # verifiers allows JSON-encoded info columns
        data["info"] = json.loads(data["info"])
    task = data.get("task")
    state = state_cls(input=data)
    state["task"] = task if isinstance(task, Mapping) else dict(data)
    state["prompt"] = prompt
    state["completion"] = completion
    state["answer"] = data.get("answer", "")
    state["info"] = data.get("info") or {}
    # One turn happened; metrics such as MultiTurnEnv's num_turns count these steps.
    step = {"prompt": prompt, "completion": completion, "response": None, "tokens": None}
    state["trajectory"] = [{**step, "reward": None, "advantage": None, "is_truncated": False, "extras": {}}]
    return state


def _verifiers_root(obj: object) -> str | None:
    """The package the object's verifiers base class comes from: `verifiers` or `verifiers.legacy`."""
    for cls in _verifiers_classes(obj):
        for marker in (".rubrics", ".envs", ".parsers"):
            if marker in cls.__module__:
                return cls.__module__.split(marker, 1)[0]
    return None


def _toolkit(rubric: Any) -> tuple[type, Callable[[list[Message]], Any]]:
    """verifiers' own State class and message normaliser, for a State just like a real rollout's.

    verifiers 0.3 hands reward functions pydantic messages (they also answer `m["content"]`); older
    releases hand plain dicts. Without a verifiers package behind the rubric, dicts it is.
    """
    root = _verifiers_root(rubric)
    types_module = sys.modules.get(f"{root}.types") if root else None
    state_cls = getattr(types_module, "State", None)
    try:
        utils = importlib.import_module(f"{root}.utils.message_utils") if root else None
    except ImportError:
        utils = None
    normalize = getattr(utils, "normalize_messages", None)
    return (state_cls if isinstance(state_cls, type) else dict), (normalize or (lambda m: m))


def _call(func: Callable[..., Any], objects: Mapping[str, Any]) -> float:
    params = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = dict(objects)
    else:
        kwargs = {k: v for k, v in objects.items() if k in params}
    result = func(**kwargs)
    if inspect.isawaitable(result):
        result = _run(result)
    return float(result)


def _score_objects(rubric: Any, state: Any) -> dict[str, Any]:
    if callable(getattr(rubric, "score_objects", None)):
        return dict(rubric.score_objects(state))
    # Older rubrics: the same objects, assembled by hand.
    objects = {k: state.get(k) for k in ("prompt", "completion", "answer", "info", "task")}
    return {**objects, "state": state, "parser": rubric.parser, **getattr(rubric, "class_objects", {})}


def _wrap(rubric: Any, func: Callable[..., Any]) -> Callable[..., float]:
    name = getattr(func, "__name__", repr(func))
    state_cls, normalize = _toolkit(rubric)

    def reward(prompt: list[Message], completion: str, info: dict[str, Any]) -> float:
        reply = normalize([{"role": "assistant", "content": completion}])
        state = _state(info[_ROW_KEY], normalize(prompt), reply, state_cls)
        try:
            return _call(func, _score_objects(rubric, state))
        except Exception as err:  # verifiers scores a failing reward function 0.0 and goes on
            logger.warning("verifiers reward function %s failed: %r", name, err)
            return 0.0

    reward.__name__ = name
    reward.__qualname__ = name
    return reward


def _is_group_func(rubric: Any, func: Callable[..., Any]) -> bool:
    own = getattr(rubric, "_is_group_func", None)
    if callable(own):
        return bool(own(func))
    return bool(set(inspect.signature(func).parameters) & _GROUP_PARAMS)


def _rubric_funcs(rubric: Any) -> list[tuple[Any, Callable[..., Any], float]]:
    """(rubric, func, weight) for every function, RubricGroups flattened into their members."""
    members = getattr(rubric, "rubrics", None)
    if members:
        return [item for member in members for item in _rubric_funcs(member)]
    funcs = list(getattr(rubric, "funcs", None) or getattr(rubric, "reward_funcs", []))
    weights = list(getattr(rubric, "weights", None) or getattr(rubric, "reward_weights", None) or [])
    weights = weights or [1.0] * len(funcs)
    return [(rubric, f, float(w)) for f, w in zip(funcs, weights, strict=True)]


def _dataset(vf_env: Any, getter: str, attr: str) -> Any:
    build = getattr(vf_env, getter, None)
    return build() if callable(build) else getattr(vf_env, attr, None)


def from_verifiers(vf_env: Any) -> Environment:
    """The classic verifiers environment `vf_env` as an rltrain Environment (see module doc)."""
    if _is_v1(vf_env):
        raise TypeError(
            f"{type(vf_env).__name__} is a verifiers v1 object (verifiers>=0.4); rltrain converts only "
            "classic environments (vf.SingleTurnEnv with a Rubric), as published up to verifiers 0.3"
        )
    if not is_verifiers_env(vf_env):
        raise TypeError(f"{type(vf_env).__name__} is not a verifiers environment")
    if getattr(vf_env, "max_turns", 1) not in (1, None):
        raise ValueError(
            f"{type(vf_env).__name__} is multi-turn; rltrain scores single-turn environments only"
        )
    items = _rubric_funcs(vf_env.rubric)
    if not items:
        raise ValueError(f"{type(vf_env).__name__}: its rubric has no reward functions")
    group = [getattr(f, "__name__", "?") for r, f, _ in items if _is_group_func(r, f)]
    if group:
        raise ValueError(f"group-level reward functions are not supported: {', '.join(group)}")
    train = _dataset(vf_env, "build_dataset", "dataset")
    if train is None:
        raise ValueError(f"{type(vf_env).__name__} has no training dataset")
    held_out = _dataset(vf_env, "build_eval_dataset", "eval_dataset")
    return Environment(
        dataset=_rows(train),
        reward_funcs=[_wrap(r, f) for r, f, _ in items],
        reward_weights=[w for _, _, w in items],
        system_prompt=getattr(vf_env, "system_prompt", None),
        eval_dataset=_rows(held_out) if held_out is not None else None,
    )
