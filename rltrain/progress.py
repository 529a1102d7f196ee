"""A one-line progress bar: step, reward, tokens/s."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, start: int, enabled: bool = True) -> None:
        self.bar = tqdm(
            total=total,
            initial=start,
            desc="rltrain",
            unit="step",
            disable=not enabled,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def update(self, step: int, metrics: dict[str, Any]) -> None:
        self.bar.set_postfix(
            reward=f"{metrics.get('reward_mean', 0.0):.3f}",
            tok_s=f"{metrics.get('tok_s', 0.0):.0f}",
            refresh=False,
        )
        self.bar.update(step - self.bar.n)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bar.close()
