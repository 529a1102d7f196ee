"""gsm8k: grade-school math word problems, scored by math-verify against the number after `#### `.

Data comes from the Hugging Face hub (`openai/gsm8k`, config `main`) or, offline, from a folder with
`train.jsonl` and `test.jsonl` (`data_dir`). The test split is the eval dataset.
"""

from __future__ import annotations

import re
from typing import Any

from rltrain.envs.base import Environment

SYSTEM_PROMPT = (
    "Solve the math problem step by step. Give the final answer as a number inside \\boxed{}, "
    "for example \\boxed{42}."
)

# A model answer longer than this is not a GSM8K number; refusing it keeps sympy from chewing on
# pathological input, since math-verify's own timeouts (signal.alarm) are off in threads.
MAX_ANSWER_CHARS = 100

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def gold_answer(solution: str) -> str:
    """The final answer of a GSM8K solution: the text after `#### `, without thousands separators."""
    if "####" not in solution:
        raise ValueError(f"GSM8K solution has no '####' answer line: {solution[-80:]!r}")
    return solution.split("####")[-1].strip().replace(",", "")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, braces balanced (answers like \\frac{1}{2} nest them)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    begin = start + len("\\boxed{")
    for i in range(begin - 1, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[begin:i]
    return None


def extract_answer(completion: str) -> str | None:
    """The model's final answer: \\boxed{...} if present, else the last number in the text."""
    boxed = last_boxed(completion)
    if boxed is not None:
        return boxed.replace(",", "").strip().rstrip(".")
    numbers = _NUMBER.findall(completion)
    return numbers[-1].replace(",", "") if numbers else None


def correct_answer(completion: str, answer: str) -> float:
    from math_verify import parse, verify  # imported lazily: it pulls in sympy (~1 s)

    predicted = extract_answer(completion)
    if not predicted or len(predicted) > MAX_ANSWER_CHARS:
        return 0.0
    # Re-boxed, math-verify normalises what models write there: \$18, \dfrac{36}{2}, 18\text{ eggs}.
    latex = f"$\\boxed{{{predicted}}}$"
    # Timeouts off: scoring may run in worker threads, where signal.alarm raises.
    gold = parse(str(answer), parsing_timeout=None)
    guess = parse(latex, parsing_timeout=None)
    if not gold or not guess:
        return 0.0
    return 1.0 if verify(gold, guess, timeout_seconds=None) else 0.0


def _load_split(data_dir: str | None, split: str) -> Any:
    import datasets

    if split not in ("train", "test"):
        raise ValueError(f"gsm8k split must be 'train' or 'test', got {split!r}")
    if data_dir is None:
        return datasets.load_dataset("openai/gsm8k", "main", split=split)
    return datasets.load_dataset("json", data_files={split: f"{data_dir}/{split}.jsonl"}, split=split)


def _rows(data: Any, num_examples: int | None, seed: int) -> list[dict[str, Any]]:
    if num_examples is not None and num_examples < len(data):
        data = data.shuffle(seed=seed).select(range(num_examples))
    return [{"question": r["question"], "answer": gold_answer(r["answer"])} for r in data]


def load_environment(
    data_dir: str | None = None,
    split: str = "train",
    num_examples: int | None = None,
    system_prompt: str = SYSTEM_PROMPT,
    seed: int = 0,
    eval_examples: int | None = None,
) -> Environment:
    """`num_examples`/`eval_examples` take a seeded random subset of the split (None: all of it)."""
    train = _rows(_load_split(data_dir, split), num_examples, seed)
    held_out = _rows(_load_split(data_dir, "test"), eval_examples, seed)
    return Environment(
        dataset=train,
        reward_funcs=[correct_answer],
        system_prompt=system_prompt,
        eval_dataset=held_out,
    )
