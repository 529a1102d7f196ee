"""Each rank's share of a step: the contiguous slice of prompts it samples, and the gathering of every
rank's records into the step's metrics (a collective, on the trainer's thread so collectives keep one
order per rank)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from rltrain.distributed import Dist
from rltrain.orchestrator.assemble import Rollouts
from rltrain.orchestrator.metrics import rollout_metrics
from rltrain.types import SamplingParams

T = TypeVar("T")


@dataclass
class StepRollouts:
    """One step's rollouts: this rank's samples, and what every rank's share adds up to."""

    mine: Rollouts
    records: list[dict[str, Any]]  # every rank's records, in rank order
    metrics: dict[str, float]
    sampling: SamplingParams


def share(batch: Sequence[T], sampling: SamplingParams, dist: Dist) -> tuple[Sequence[T], SamplingParams]:
    """This rank's contiguous share of the step's prompts, seeded as their global indices."""
    start, stop = dist.shard(len(batch))
    return batch[start:stop], sampling.with_offset(start)


def gather(mine: Rollouts, sampling: SamplingParams, dist: Dist) -> StepRollouts:
    """Every rank's records and counts (a collective), and the step's metrics over all of them."""
    shares = dist.all_gather((mine.records, mine.errored, mine.filtered_groups))
    records = [r for recs, _, _ in shares for r in recs]
    errored = sum((errs for _, errs, _ in shares), Counter[str]())
    metrics = rollout_metrics(records, errored, sum(f for _, _, f in shares))
    return StepRollouts(mine, records, metrics, sampling)
