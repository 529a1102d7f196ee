"""reasoning-gym: any procedurally generated reasoning-gym task family, by name, offline.

Each row carries its reasoning-gym entry (`question`, `answer`, `metadata`) in `info["entry"]`; the
reward is the task's own `score_answer(answer, entry)`, given the text inside the last
<answer>...</answer> (or the whole completion when there are no tags).
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from rltrain.envs.base import Environment

SYSTEM_PROMPT = (
    "Given a problem, your task is to answer the question by thinking step-by-step in a clear and "
    "specific manner.\nOnce you have thought about the reasoning process, provide the answer in the "
    "following format:\n<answer>answer here</answer>\nDo not explain your reasoning inside the answer "
    "tags, provide only the final answer."
)

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def extract_answer(completion: str) -> str:
    found = _ANSWER.findall(completion)
    return (found[-1] if found else completion).strip()


def task_names() -> list[str]:
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


def _create(task: str, size: int, seed: int, config: dict[str, Any]) -> Any:
    # This file shares the package's name; the loader imports it under another name, so this finds
    # the installed reasoning_gym package.
    from reasoning_gym.factory import create_dataset

    names = task_names()
    if task not in names:
        close = difflib.get_close_matches(task, names, n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(
            f"unknown reasoning-gym task {task!r}: {hint}{len(names)} tasks exist, e.g. "
            f"{', '.join(names[:8])} (reasoning_gym.factory.DATASETS lists them all)"
        )
    return create_dataset(task, size=size, seed=seed, **config)


def _rows(data: Any, split: str, skip: set[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for entry in data:
        if entry["question"] in skip:
            continue
        rows.append(
            {
                "question": entry["question"],
                "answer": entry["answer"],
                "info": {"split": split, "entry": entry},
            }
        )
    return rows


def load_environment(
    task: str = "leg_counting",
    num_examples: int = 200,
    seed: int = 0,
    eval_examples: int = 50,
    system_prompt: str = SYSTEM_PROMPT,
    config: dict[str, Any] | None = None,
) -> Environment:
    """`config`: the task's own generator settings (e.g. {"min_animals": 2}), passed to create_dataset."""
    if num_examples < 1 or eval_examples < 0:
        raise ValueError("num_examples must be >= 1 and eval_examples >= 0")
    options = dict(config or {})
    train_data = _create(task, num_examples, seed, options)
    # reasoning-gym seeds entry i with seed + i, so starting the eval seed past the training range
    # keeps the two streams apart; questions that still coincide are dropped from eval.
    eval_data = _create(task, eval_examples, seed + num_examples, options) if eval_examples else None
    train = _rows(train_data, "train", skip=set())
    held_out = _rows(eval_data, "eval", skip={r["question"] for r in train}) if eval_data else []
    scorers = {"train": train_data, "eval": eval_data}

    def task_score(completion: str, info: dict[str, Any]) -> float:
        # Each split is scored by the dataset that generated it, since scoring may read its config.
        return float(scorers[info["split"]].score_answer(extract_answer(completion), info["entry"]))

    return Environment(
        dataset=train,
        reward_funcs=[task_score],
        system_prompt=system_prompt,
        eval_dataset=held_out or None,
    )
