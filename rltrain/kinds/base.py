"""What an environment kind implements: the `EnvKind` protocol (one loaded environment) and the
`EpisodeRunner` protocol (how every environment of the kind plays and scores its episodes).

The orchestrator knows environments only through these two protocols: the prompt order draws `rows`,
sizing reads `max_turns` and `prompt_lengths`, the worker pool loads what `worker_spec` says, and each
step's prompts go to their kind's runner, one call per kind with all of the kind's prompts. A kind is
registered with one line in rltrain/kinds/__init__.py (docs/architecture.md, "A new environment kind").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from rltrain.config import EnvConfig
from rltrain.envs.base import Row
from rltrain.envs.scoring import GroupScores, Scorer
from rltrain.envs.workers import EnvSpec
from rltrain.rollout.backend import RolloutBackend
from rltrain.rollout.episodes import Episode, EpisodeLimits
from rltrain.rollout.prompting import PromptEncoder
from rltrain.types import SamplingParams


@dataclass(frozen=True)
class PromptLengths:
    """Prompt tokens (chat template applied) for sizing the engine's context."""

    tokens: list[int]  # one per row, in the order of `rows`; or one budget when not `measured`
    measured: bool = True  # per row: `seq_len` may drop rows by them. False: the first observation is
    # only known once an episode starts (a server's reset, a harness's own rendering): `tokens` is a budget


class EnvKind(Protocol):
    """One loaded environment, whatever runs it."""

    kind: str  # its kind's registered name: the environments of one kind share one runner
    rows: list[Row]  # the training rows the prompt order draws (sizing may drop some, before the run)
    eval_rows: list[Row] | None  # held-out rows (None: evaluations take `rows`)
    max_turns: int  # assistant turns an episode may take (1: single-turn): sizes the context

    def prompt_lengths(self, encoder: PromptEncoder) -> PromptLengths:
        """The rows' prompt lengths, or a budget where they are known only once an episode starts."""
        ...

    def worker_spec(self, name: str) -> EnvSpec | None:
        """How the run's worker processes load this environment by `name` (None: it needs none)."""
        ...

    def start_runner(self, ctx: RunnerContext) -> EpisodeRunner:
        """The runner of this kind (asked of the first environment of the kind that plays)."""
        ...


@dataclass
class EnvSlot:
    """An environment of the run under its name (metrics, records, worker lookup) and its share of
    prompts."""

    name: str
    env: EnvKind
    ratio: float


@dataclass(frozen=True)
class Item:
    """One prompt of a batch, as a runner gets it."""

    group: int  # global group id: seeds its completions, shard-invariant
    slot: EnvSlot
    row: Row


class EpisodeRunner(Protocol):
    """Plays and scores the episodes of every environment of one kind."""

    def episodes(self, items: Sequence[Item], n: int, sampling: SamplingParams) -> list[list[Episode]]:
        """`n` episodes per item, in order (sampled with the engine's current adapter)."""
        ...

    def score(self, items: Sequence[Item], groups: Sequence[list[Episode]]) -> list[GroupScores]:
        """Each group's rewards (a failed episode scores the run's error_reward). Needs no engine:
        a producer runs it beside sampling the next batch."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RunnerContext:
    """What a runner may use of the run."""

    backend: RolloutBackend  # the engine: generate / sample with the current adapter
    encoder: PromptEncoder  # the chat template and its switches
    limits: EpisodeLimits  # context, turn and episode timeouts
    scorer: Scorer  # reward calls in the run's worker processes (scorer.pool runs environment code)
    model_path: str  # the base model's directory: a kind that tokenizes on its own loads it from there


@dataclass(frozen=True)
class Kind:
    """A registered environment kind: which `[[env]]` entries are its, and how to load one."""

    name: str
    claims: Callable[[EnvConfig], bool]  # this entry is of this kind (the first kind that claims it wins)
    load: Callable[[EnvConfig], EnvKind]  # load it in the trainer's process
