"""reverse-text: reverse a short text character by character (after primeintellect/reverse-text).

Rows are generated from a fixed word list, so the same arguments always give the same dataset and no
download is needed. The reward is 1 - normalised Levenshtein distance to the reversed text: exact is
1.0, a string sharing no characters with it is 0.0, and partial reversals earn partial credit, which
gives a small model a gradient to climb.
"""

from __future__ import annotations

import random
import re
from typing import Any

from rltrain.envs.base import Environment

SYSTEM_PROMPT = (
    "Reverse the given text character by character. "
    "Put only the reversed text inside <reversed_text></reversed_text> tags."
)

WORDS = (  # noqa: SIM905 - a word list reads better as text
    "apple river stone cloud green quiet light house music paper table water dream smile train "
    "bread ocean tiger forest candle garden window silver yellow planet rocket spring winter "
    "summer autumn mirror pencil basket button castle dragon engine falcon guitar hammer island "
    "jacket kettle lemon magnet number orange pepper rabbit saddle tunnel violin wagon zebra "
    "anchor bridge circle desert feather glacier harbor jungle ladder meadow needle orchard "
    "puzzle quartz ribbon shadow thunder valley whistle bottle cotton lantern marble velvet "
    "copper crystal"
).split()

_TAGGED = re.compile(r"<reversed_text>(.*?)</reversed_text>", re.DOTALL)


def _texts(rng: random.Random, count: int, min_words: int, max_words: int, skip: set[str]) -> list[str]:
    texts: list[str] = []
    seen = set(skip)
    # A bounded number of tries: tiny word ranges may not have `count` distinct texts.
    for _ in range(count * 50):
        if len(texts) == count:
            break
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words)))
        if text not in seen:
            seen.add(text)
            texts.append(text)
    if len(texts) < count:
        raise ValueError(f"only {len(texts)} distinct texts of {min_words}-{max_words} words; asked {count}")
    return texts


def _rows(texts: list[str]) -> list[dict[str, Any]]:
    return [{"question": f"Reverse this text:\n{t}", "answer": t[::-1], "info": {"text": t}} for t in texts]


def extract_reversed(completion: str) -> str:
    """The last <reversed_text> block if the model used the tags, else the whole completion."""
    found = _TAGGED.findall(completion)
    return (found[-1] if found else completion).strip()


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def similarity(predicted: str, target: str) -> float:
    if not predicted and not target:
        return 1.0
    return 1.0 - levenshtein(predicted, target) / max(len(predicted), len(target))


def reversal_similarity(completion: str, answer: str) -> float:
    return similarity(extract_reversed(completion), str(answer))


def load_environment(
    num_examples: int = 1000,
    eval_examples: int = 100,
    seed: int = 0,
    min_words: int = 1,
    max_words: int = 4,
    system_prompt: str = SYSTEM_PROMPT,
) -> Environment:
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words} and {max_words}")
    if num_examples < 1 or eval_examples < 0:
        raise ValueError("num_examples must be >= 1 and eval_examples >= 0")
    rng = random.Random(seed)
    train = _texts(rng, num_examples, min_words, max_words, skip=set())
    # Eval texts exclude every training text, so eval measures the skill rather than recall.
    held_out = _texts(rng, eval_examples, min_words, max_words, skip=set(train)) if eval_examples else []
    return Environment(
        dataset=_rows(train),
        reward_funcs=[reversal_similarity],
        system_prompt=system_prompt,
        eval_dataset=_rows(held_out) or None,
    )
