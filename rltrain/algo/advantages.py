"""Group-relative advantages (GRPO): each completion is judged against its own group."""

from __future__ import annotations

import math
from collections.abc import Sequence


def group_advantages(rewards: Sequence[float], scale: bool = True, eps: float = 1e-6) -> list[float]:
    """reward - group mean, divided by the group's population std when `scale` (Dr. GRPO: scale=False).

    A group whose rewards are all equal carries no signal: every advantage is 0 (never a 0/0).
    """
    if not rewards:
        return []
    n = len(rewards)
    mean = sum(rewards) / n
    centered = [r - mean for r in rewards]
    if not scale:
        return centered
    std = math.sqrt(sum(c * c for c in centered) / n)
    if std < eps:
        return [0.0] * n
    return [c / (std + eps) for c in centered]


def is_zero_advantage(advantages: Sequence[float], eps: float = 1e-9) -> bool:
    """True when a group carries no learning signal (the `zero_advantage` pre-batch filter)."""
    return all(abs(a) <= eps for a in advantages)
