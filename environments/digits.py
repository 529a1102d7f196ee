"""The demo environment: answer with digits. Reward = share of the completion's characters that are digits.

The tiny built-in model starts around half digits (its tokenizer was trained on words and numbers)
and learns to answer in digits only within a few dozen steps — a visible learning curve in minutes.
"""

from __future__ import annotations

import random

from rltrain import Environment

TEMPLATES = [
    "Write a number.",
    "Give me some digits.",
    "What is the count?",
    "Say a number please.",
    "Answer with a number.",
    "How many are there?",
    "Write the total.",
    "Add them up.",
]


def digit_fraction(completion: str) -> float:
    chars = [c for c in completion if not c.isspace()]
    if not chars:
        return 0.0
    return sum(c.isdigit() for c in chars) / len(chars)


def load_environment(num_examples: int = 64, seed: int = 0) -> Environment:
    rng = random.Random(seed)
    rows = [{"question": f"{rng.choice(TEMPLATES)} ({i})"} for i in range(num_examples)]
    eval_rows = [{"question": f"{t} (eval)"} for t in TEMPLATES]
    return Environment(dataset=rows, reward_funcs=[digit_fraction], eval_dataset=eval_rows)
