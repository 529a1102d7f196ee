"""Answer in capital letters: reward = the share of the reply's letters that are upper case.

A task a real 135M instruct model (builtin:smollm2) visibly learns in minutes on a CPU: it starts
near 0.02 (it writes normal prose) and reaches 0.6 by step 12 of 32 rollouts at lr 1e-3
(configs/smollm2.toml), while its replies stay answers to the question. (The tiny built-in model has
no case to learn.)
"""

from __future__ import annotations

import random
import re

from rltrain import Environment

QUESTIONS = [
    "What is your favorite season?", "Describe the ocean.", "Why do birds sing?", "What is a good breakfast?",
    "Tell me about cats.", "How do plants grow?", "What is the moon?", "Name a famous city.",
    "What makes people happy?", "How does rain form?", "What is music?", "Why is the sky blue?",
    "What do dogs eat?", "Describe a forest.", "What is a computer?", "How do you make tea?",
    "What is friendship?", "Describe winter.", "What is a river?", "Why do we sleep?",
    "What is a volcano?", "How do bees make honey?", "What is the sun made of?", "Describe a city at night.",
]  # fmt: skip
LETTERS = re.compile(r"[A-Za-z]")


def upper_share(completion: str) -> float:
    letters = LETTERS.findall(completion)
    return sum(c.isupper() for c in letters) / len(letters) if letters else 0.0


def load_environment(num_examples: int = 256, seed: int = 0) -> Environment:
    rng = random.Random(seed)
    rows = [{"question": rng.choice(QUESTIONS)} for _ in range(num_examples)]
    return Environment(
        dataset=rows,
        eval_dataset=[{"question": q} for q in QUESTIONS[:8]],
        reward_funcs=[upper_share],
        system_prompt="Answer in one short sentence.",
    )
