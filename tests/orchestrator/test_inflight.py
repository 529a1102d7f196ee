"""What a checkpoint keeps of the batches sampled ahead (the end-to-end property, a resume repeating the
uninterrupted run at every level, is tests/test_run.py::test_resume_is_exact_at_every_async_level)."""

from __future__ import annotations

import pickle
from concurrent.futures import Future

from rltrain.distributed import Dist
from rltrain.orchestrator.assemble import Rollouts
from rltrain.orchestrator.inflight import keep, restore
from rltrain.orchestrator.sources import Pending
from rltrain.types import Sample, SamplingParams


def _pending(step: int, error: bool = False) -> Pending:
    done: Future[Rollouts] = Future()
    if error:
        done.set_exception(RuntimeError("judge down"))
    else:
        sample = Sample([1, 2], [3, 4], [-0.5, -0.25], [1, 1], 1.0, 0.5, group_id=step, version=step - 2)
        done.set_result(Rollouts([sample], [{"row": f"r{step}", "reward": 1.0}]))
    return Pending(done, SamplingParams(16), {"epoch": 0, "index": step}, step - 2, {"x": 1.0}, 0.25)


def test_kept_batches_come_back_as_they_were_sampled() -> None:
    saved = pickle.loads(pickle.dumps(keep([_pending(4), _pending(5)], 2, Dist())))  # as torch.save does
    back = restore(saved, 2, Dist())
    assert [p.version for p in back] == [2, 3] and [p.position["index"] for p in back] == [4, 5]
    assert (
        back[0].mine.result().samples[0].completion_ids == [3, 4]
        and back[1].mine.result().records[0]["row"] == "r5"
    )
    assert back[0].extra == {"x": 1.0} and back[0].sample_s == 0.25 and back[0].sampling == SamplingParams(16)


def test_a_failed_batch_ends_what_is_kept_and_another_level_keeps_nothing() -> None:
    saved = keep([_pending(4), _pending(5, error=True), _pending(6)], 3, Dist())
    assert [k.version for k in saved["ranks"][0]] == [2]  # batch 5 and after: sampled again on resume
    assert restore(saved, 1, Dist()) == [] and restore(saved, 3, Dist())[0].version == 2
    assert restore(None, 1, Dist()) == [] and restore(keep([], 1, Dist()), 1, Dist()) == []
