"""A multi-turn game: guess the hidden number; after each guess the environment says higher or lower.

Reward over the assistant's turns: half for answering in numbers (the share of digit characters in
each reply, averaged over turns: what the tiny model learns first), half for how close the best guess
came (1.0 when it hits). A reply's guess is its first number. Episodes end on the right number or
after `max_turns` guesses.
"""

from __future__ import annotations

import random
import re
from typing import Any

from rltrain import Environment

LOW, HIGH = 0, 99


def _guess(text: str) -> int | None:
    """The guess in a reply: its first number, when that is in range."""
    found = re.search(r"\d+", text)
    if found is None:
        return None
    value = int(found.group())
    return value if LOW <= value <= HIGH else None


def respond(messages: list[dict[str, Any]], state: dict[str, Any]) -> list[dict[str, str]] | None:
    guess = _guess(messages[-1]["content"])
    target = int(state["answer"])
    if guess is not None:
        state["best"] = min(state.get("best", HIGH - LOW), abs(guess - target))
    if guess == target:
        return None  # found it: the episode is over
    if guess is None:
        return [{"role": "user", "content": f"Answer with just a number from {LOW} to {HIGH}."}]
    return [{"role": "user", "content": "Higher." if guess < target else "Lower."}]


def numeric(completion: list[dict[str, Any]]) -> float:
    """The share of digit characters in each assistant reply, averaged over the replies."""
    shares = []
    for m in completion:
        if m["role"] == "assistant":
            chars = [c for c in m["content"] if not c.isspace()]
            shares.append(sum(c.isdigit() for c in chars) / len(chars) if chars else 0.0)
    return sum(shares) / max(len(shares), 1)


def closeness(state: dict[str, Any]) -> float:
    """1 for the right number, falling linearly with the best guess's distance."""
    best = state.get("best")
    return 0.0 if best is None else 1.0 - best / (HIGH - LOW)


def load_environment(num_examples: int = 256, max_turns: int = 3, seed: int = 0) -> Environment:
    rng = random.Random(seed)

    def row(i: int) -> dict[str, Any]:
        return {
            "question": f"Guess my number from {LOW} to {HIGH}. Reply with the number only. (game {i})",
            "answer": str(rng.randint(LOW, HIGH)),
        }

    return Environment(
        dataset=[row(i) for i in range(num_examples)],
        eval_dataset=[row(i) for i in range(32)],
        reward_funcs=[numeric, closeness],
        reward_weights=[0.5, 0.5],
        env_response=respond,
        max_turns=max_turns,
    )
