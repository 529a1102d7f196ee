"""What the guards say: an `Event` (a guard that fired, with its numbers) and a `Decision` (go on, stop,
or roll back)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Event:
    """A guard that fired: at `step`, its condition having held since `onset`."""

    signal: str
    step: int
    onset: int
    action: str
    values: dict[str, float]
    threshold: float
    window: int

    @property
    def message(self) -> str:
        numbers = ", ".join(f"{k} {v:.4g}" for k, v in self.values.items())
        since = f"steps {self.onset}-{self.step}" if self.onset < self.step else f"step {self.step}"
        return f"guard {self.signal} ({self.action}): {numbers} (threshold {self.threshold:g}; {since})"

    def row(self) -> dict[str, Any]:
        """The event as metrics.jsonl holds it: in its step's row, under "guards" (a list)."""
        return {**asdict(self), "message": self.message}


@dataclass(frozen=True)
class Decision:
    """What the loop does after a step: go on, stop (failed, with `reason`), or roll back."""

    action: Literal["go_on", "stop", "rollback"]
    reason: str = ""
    checkpoint: str | None = None  # rollback: restore this checkpoint
    lr_factor: float = 1.0  # rollback: multiply the live learning rate by this
