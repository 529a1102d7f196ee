"""The rollout backend protocol, and what every backend shares."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from rltrain.types import Group, Request, SamplingParams, requests_for


class RolloutBackend(Protocol):
    """Samples groups of completions from the base model with the current LoRA adapter applied."""

    name: str
    timings: dict[str, float]  # the last call's engine timings (startup_s, generate_s, ...), for metrics
    collective: bool  # sampling is a collective: every rank must call generate (and evaluate) together
    reads_live_weights: bool  # samples the trainer's own model: no adapter files to hand over
    version: int  # the adapter version it samples with: optimizer steps applied to it

    @property
    def samples_beside_training(self) -> bool:
        """It may sample on another thread while the trainer trains (max_async_level)."""
        ...

    def generate(self, prompts: Sequence[list[int]], n: int, sampling: SamplingParams) -> list[Group]:
        """Sample `n` completions for each prompt (token ids); one Group per prompt, in order."""
        ...

    def sample(self, requests: Sequence[Request], sampling: SamplingParams) -> list[Group]:
        """One Group per request: its `n` completions, drawn with its own seed (multi-turn episodes ask
        for the next turn of each episode this way, several prompts in one batch)."""
        ...

    def load_adapter(self, path: Path | None, version: int) -> None:
        """Sample with the adapter saved at `path` (a peft adapter dir) from now on; None = base model
        (or, for a backend that reads the trainer's live weights, what the trainer holds). `version`:
        optimizer steps applied to those weights."""
        ...

    def score_logprobs(self, prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
        """Logprob of each completion token under the current adapter (the landed check's probe)."""
        ...

    def hold(self) -> None:
        """Sample with the weights as they are now until `release` (a backend reading the trainer's
        live weights snapshots them; others hold their loaded adapter anyway)."""
        ...

    def release(self) -> None:
        """Undo `hold`."""
        ...

    def sleep(self) -> None:
        """Free accelerator memory while the trainer updates (a no-op where unsupported)."""
        ...

    def wake_up(self) -> None:
        """Undo `sleep` before the next adapter load and sampling."""
        ...

    def close(self) -> None:
        """Free the engine's memory."""
        ...


class BackendBase:
    """What every backend shares: `generate` is `sample` over one seeded request per prompt."""

    version = 0

    def hold(self) -> None:
        pass

    def release(self) -> None:
        pass

    def sample(self, requests: Sequence[Request], sampling: SamplingParams) -> list[Group]:
        raise NotImplementedError

    def generate(self, prompts: Sequence[list[int]], n: int, sampling: SamplingParams) -> list[Group]:
        return self.sample(requests_for(list(prompts), n, sampling), sampling)
