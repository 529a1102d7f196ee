"""Deterministic prompt order across one or more environments, resumable from a small state dict.

Each environment walks its rows in a fresh permutation per epoch, seeded by (seed, env, epoch); which
environment fills each prompt slot is drawn by `ratio`, seeded by (seed, step). The only state is one
position per environment, so a resumed run draws exactly the prompts an uninterrupted run would.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from rltrain.envs.base import Row
from rltrain.kinds.base import EnvSlot


class PromptSampler:
    def __init__(self, slots: Sequence[EnvSlot], seed: int) -> None:
        self.slots = list(slots)
        self.seed = seed
        self.positions = {s.name: 0 for s in self.slots}

    def _row(self, index: int) -> Row:
        slot = self.slots[index]
        pos = self.positions[slot.name]
        n = len(slot.env.rows)
        epoch, offset = divmod(pos, n)
        order = list(range(n))
        random.Random(f"{self.seed}/{slot.name}/{epoch}").shuffle(order)
        self.positions[slot.name] = pos + 1
        return slot.env.rows[order[offset]]

    def next_batch(self, step: int, count: int) -> list[tuple[int, Row]]:
        """`count` (env index, row) pairs for `step`."""
        rng = random.Random(f"{self.seed}/mix/{step}")
        weights = [s.ratio for s in self.slots]
        picks = [0] * count if len(self.slots) == 1 else rng.choices(range(len(self.slots)), weights, k=count)
        return [(i, self._row(i)) for i in picks]

    def state_dict(self) -> dict[str, int]:
        return dict(self.positions)

    def load_state_dict(self, state: dict[str, int]) -> None:
        unknown = set(state) - set(self.positions)
        if unknown:
            raise ValueError(f"resume: checkpoint has environments {sorted(unknown)} the config lacks")
        self.positions.update(state)
