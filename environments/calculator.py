"""A tool task: multiply two large numbers, which only the `multiply` tool gets right.

The model calls the tool in its family's format (Qwen3 / ChatML: a <tool_call> JSON block), reads the
result in the next turn and answers. Reward: 1.0 for the exact product in the final answer, plus 0.1
for having called the tool at all.
"""

from __future__ import annotations

import random
import re
from typing import Any

from rltrain import Environment


def multiply(a: int, b: int) -> int:
    """Multiply two integers exactly.

    Args:
        a: The first factor.
        b: The second factor.
    """
    return int(a) * int(b)


def exact_product(completion: list[dict[str, Any]], answer: str) -> float:
    """The last assistant message states the product."""
    replies = [m["content"] for m in completion if m["role"] == "assistant"]
    numbers = re.findall(r"-?\d+", replies[-1].replace(",", "")) if replies else []
    return 1.0 if numbers and numbers[-1] == answer else 0.0


def used_tool(completion: list[dict[str, Any]]) -> float:
    return 1.0 if any(m["role"] == "tool" for m in completion) else 0.0


def load_environment(num_examples: int = 128, max_turns: int = 3, seed: int = 0) -> Environment:
    rng = random.Random(seed)

    def row() -> dict[str, Any]:
        a, b = rng.randint(100_000, 999_999), rng.randint(100_000, 999_999)
        return {"question": f"What is {a} * {b}? Use the multiply tool.", "answer": str(a * b)}

    return Environment(
        dataset=[row() for _ in range(num_examples)],
        reward_funcs=[exact_product, used_tool],
        reward_weights=[1.0, 0.1],
        tools=[multiply],
        max_turns=max_turns,
    )
