"""Groups -> scored Samples: advantages, records, filters, errors, and each rank's share.

The backend here is a scripted stand-in (fixed completions), so that the bookkeeping is checked
against hand-computed numbers; the real backends are tested in test_hf_backend / test_vllm_*.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from rltrain.distributed import Dist
from rltrain.envs.loader import load_rltrain_environment
from rltrain.envs.scoring import Scorer
from rltrain.envs.workers import EnvSpec, WorkerPool
from rltrain.kinds.base import EnvSlot, RunnerContext
from rltrain.kinds.native import NativeEnv
from rltrain.orchestrator.assemble import GroupSettings
from rltrain.orchestrator.collect import Collector
from rltrain.orchestrator.shares import gather, share
from rltrain.rollout.episodes import EpisodeLimits
from rltrain.types import Completion, Group, SamplingParams


class ScriptedBackend:
    """Completion j of every prompt is TEXTS[j] (one token per character)."""

    name, timings, collective, reads_live_weights, version = "scripted", {}, False, False, 0
    TEXTS = ["11", "1a", "aa", "zz"]

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def generate(self, prompts: Sequence[list[int]], n: int, sampling: SamplingParams) -> list[Group]:
        self.calls.append((len(prompts), sampling.seed_offset))
        texts = self.TEXTS[:n]
        return [
            Group(list(p), [Completion([ord(c) for c in t], [-1.0] * len(t), t, "stop") for t in texts])
            for p in prompts
        ]

    def load_adapter(self, path: Path | None, version: int) -> None: ...
    def score_logprobs(self, prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
        return []

    def sleep(self) -> None: ...
    def wake_up(self) -> None: ...
    def close(self) -> None: ...


class CharEncoder:
    tokenizer = None

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        return [ord(c) for c in messages[-1]["content"]]


ENV = """
import rltrain

def digits(completion: str) -> float:
    return sum(c.isdigit() for c in completion) / len(completion)

def broken(completion: str) -> float:
    raise RuntimeError("judge down")

def load_environment(broken_judge: bool = False):
    funcs = [digits, broken] if broken_judge else [digits]
    return rltrain.Environment(dataset=[{"question": f"q{i}"} for i in range(4)], reward_funcs=funcs)
"""


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., tuple[Collector, ScriptedBackend]]]:
    """make(n, drop=False, broken_judge=False): a collector on the scripted backend and a real scorer."""
    path = tmp_path / "digits_env.py"
    path.write_text(ENV)
    made: list[Collector] = []

    def _make(n: int, drop: bool = False, broken_judge: bool = False) -> tuple[Collector, ScriptedBackend]:
        args = {"broken_judge": broken_judge}
        env = NativeEnv(load_rltrain_environment(str(path), args), str(path), args)
        scorer = Scorer(WorkerPool([EnvSpec("d", str(path), args)], size=2), timeout_s=10)
        backend = ScriptedBackend()
        limits = EpisodeLimits(max_context=4096, turn_timeout_s=10, episode_timeout_s=60)
        ctx = RunnerContext(backend, CharEncoder(), limits, scorer, "")  # type: ignore[arg-type]
        made.append(Collector([EnvSlot("d", env, 1.0)], ctx, GroupSettings(n, True, drop)))
        return made[-1], backend

    yield _make
    for collector in made:
        collector.close()


def test_rewards_advantages_and_records(make: Callable) -> None:
    collector, _ = make(4)
    rows = collector.slots[0].env.rows
    ro = collector.collect([(0, rows[0]), (0, rows[1])], SamplingParams(8, seed=1))
    assert [s.reward for s in ro.samples[:4]] == [1.0, 0.5, 0.0, 0.0]
    # mean 0.375, population std sqrt(0.171875)
    std = (((0.625**2) + (0.125**2) + 2 * (0.375**2)) / 4) ** 0.5
    assert ro.samples[0].advantage == pytest.approx(0.625 / (std + 1e-6))
    assert [s.group_id for s in ro.samples] == [0] * 4 + [1] * 4
    assert ro.samples[1].completion_ids == [ord("1"), ord("a")] and ro.samples[1].loss_mask == [1, 1]
    assert ro.records[1] == {
        "group": 0, "env": "d", "row": rows[0].key, "prompt": rows[0].prompt, "completion": "1a",
        "reward": 0.5, "advantage": ro.samples[1].advantage,
        "parts": {"digits": 0.5}, "finish": "stop", "prompt_tokens": 2, "completion_tokens": 2,
    }  # fmt: skip
    assert "turns" not in ro.records[1]  # a single-turn record keeps its shape


def test_zero_advantage_groups_are_filtered_but_recorded(make: Callable) -> None:
    collector, _ = make(1, drop=True)  # one completion per group: no spread, no signal
    rows = collector.slots[0].env.rows
    ro = collector.collect([(0, rows[0]), (0, rows[1])], SamplingParams(8))
    assert ro.samples == [] and ro.filtered_groups == 2 and len(ro.records) == 2


def test_scoring_errors_are_counted_per_environment(make: Callable) -> None:
    collector, _ = make(2, broken_judge=True)
    ro = collector.collect([(0, collector.slots[0].env.rows[0])], SamplingParams(8))
    assert ro.errored == {"d": 2} and [s.reward for s in ro.samples] == [0.0, 0.0]


def test_a_rank_samples_its_contiguous_share_with_global_seeds(make: Callable) -> None:
    collector, backend = make(2)
    rows = collector.slots[0].env.rows
    batch = [(0, r) for r in rows]
    dist = Dist()
    dist.rank, dist.world = 1, 2  # as rank 1 of 2 would see it (no collective runs with all_gather mocked)
    dist.all_gather = lambda obj: [obj, obj]  # type: ignore[method-assign]
    rows, sampling = share(batch, SamplingParams(8, seed=3), dist)
    out = gather(collector.collect(rows, sampling), sampling, dist)
    assert backend.calls == [(2, 2)]  # prompts 2 and 3, seeded as global prompts 2 and 3
    assert [s.group_id for s in out.mine.samples] == [2, 2, 3, 3]
    assert out.metrics["reward_mean"] == pytest.approx(0.75) and len(out.records) == 8
