"""What a checkpoint keeps of the producer's work in flight, so that a resumed run repeats the
uninterrupted one exactly at any `max_async_level`.

After step N with k = max_async_level, the batches of steps N+1..N+k were sampled with the adapters
after steps N-k..N-1, which the checkpoint (the adapter after N) does not hold. Batches, not adapters,
are kept: they are what training reads next, they are small beside an adapter (token ids, logprobs and
the episode records, not weights), they need no engine to replay, and a batch's scoring (a judge, a
sandbox) is not repeated. Each holds the prompt order after it, so the resumed producer draws on from
the last one. The batch of step N+k+1 is sampled with the adapter after N: the checkpoint's own.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from rltrain.distributed import Dist
from rltrain.orchestrator.assemble import Rollouts
from rltrain.orchestrator.sources import Pending
from rltrain.types import SamplingParams

log = logging.getLogger("rltrain")


@dataclass
class Kept:
    """One batch sampled ahead, as a checkpoint holds it: this rank's share, scored."""

    rollouts: Rollouts
    sampling: SamplingParams
    position: dict[str, int]  # the prompt order after this batch
    version: int  # the adapter that sampled it
    extra: dict[str, float] = field(default_factory=dict)
    sample_s: float = 0.0


def keep(pending: list[Pending], level: int, dist: Dist) -> dict[str, Any]:
    """Every rank's batches in flight (a collective when distributed), for the checkpoint's state. A batch
    whose scoring failed (on any rank) ends the list: the resumed run samples it again (and meets the
    error there)."""
    mine: list[Kept] = []
    for p in pending:
        if p.mine.exception() is not None:
            break
        mine.append(Kept(p.mine.result(), p.sampling, p.position, p.version, dict(p.extra), p.sample_s))
    ranks = dist.all_gather(mine)
    kept = min(len(r) for r in ranks)  # every rank resumes with the same steps kept
    return {"level": level, "ranks": [r[:kept] for r in ranks]}


def restore(saved: dict[str, Any] | None, level: int, dist: Dist) -> list[Pending]:
    """The batches a checkpoint kept for this rank, to train on first; none where the run resumes with
    another `max_async_level` or world size (they would break its bound or its shares)."""
    if not saved or not saved["ranks"][0]:
        return []
    if saved["level"] != level or len(saved["ranks"]) != dist.world:
        if dist.is_main:
            log.info(
                "notice: the checkpoint's %d batches sampled ahead (max_async_level %d, %d ranks) are "
                "dropped: this run samples them again",
                len(saved["ranks"][0]),
                saved["level"],
                len(saved["ranks"]),
            )
        return []
    out = []
    for kept in saved["ranks"][dist.rank]:
        done: Future[Rollouts] = Future()
        done.set_result(kept.rollouts)
        out.append(Pending(done, kept.sampling, kept.position, kept.version, kept.extra, kept.sample_s))
    return out
