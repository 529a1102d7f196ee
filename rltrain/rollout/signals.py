"""Per-step statistics of the rollouts that the guards read (rltrain/guards.py): how repetitive the
completions are, and how many groups carry no learning signal."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import Any

REPEAT_N = 3  # word trigrams: short completions (the tiny model's ~8 words) still have several


def repeated_ngram_share(items: Sequence[Hashable], n: int = REPEAT_N) -> float:
    """The share of a sequence's n-grams that repeat an earlier one: 1 - unique / total (rep-n of
    Welleck et al. 2019, "Neural text generation with unlikelihood training"). 0 for fewer than n + 1
    items: too short to repeat anything."""
    total = len(items) - n + 1
    if total < 2:
        return 0.0
    grams = set(zip(*(items[i:] for i in range(n)), strict=False))  # zip stops at the last whole n-gram
    return 1.0 - len(grams) / total


def repetition(texts: Sequence[str], n: int = REPEAT_N) -> float:
    """The mean rep-n over completions, on whitespace-separated words (a tokenizer-free measure: a
    loop of the same phrase repeats its words whatever the tokenizer did)."""
    if not texts:
        return 0.0
    return sum(repeated_ngram_share(t.split(), n) for t in texts) / len(texts)


def flat_group_share(records: Sequence[dict[str, Any]], eps: float = 1e-9) -> float:
    """The share of groups whose rewards are all equal: they add nothing to the gradient, whether or not
    the zero_advantage filter drops them. Records carry `env`, `group` and `reward`."""
    groups: defaultdict[tuple[str, int], list[float]] = defaultdict(list)
    for r in records:
        groups[(r["env"], r["group"])].append(float(r["reward"]))
    if not groups:
        return 0.0
    flat = sum(max(g) - min(g) <= eps for g in groups.values())
    return flat / len(groups)
