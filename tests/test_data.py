"""The prompt order: deterministic, mixed by ratio, resumable from its small state."""

from __future__ import annotations

from collections import Counter

import pytest

from rltrain import Environment
from rltrain.kinds.base import EnvSlot
from rltrain.orchestrator.prompts import PromptSampler


def _slot(name: str, n: int, ratio: float = 1.0) -> EnvSlot:
    env = Environment(dataset=[{"question": f"{name}{i}"} for i in range(n)], reward_funcs=[lambda: 0.0])
    return EnvSlot(name, env, ratio)


def _questions(batch: list[tuple[int, object]]) -> list[str]:
    return [row.prompt[-1]["content"] for _, row in batch]  # type: ignore[attr-defined]


def test_each_epoch_is_a_permutation_and_seeded() -> None:
    sampler = PromptSampler([_slot("a", 5)], seed=1)
    first, second = _questions(sampler.next_batch(1, 5)), _questions(sampler.next_batch(2, 5))
    assert sorted(first) == sorted(second) == [f"a{i}" for i in range(5)]
    assert first != second  # a fresh permutation per epoch
    again = PromptSampler([_slot("a", 5)], seed=1)
    assert _questions(again.next_batch(1, 5)) == first
    assert _questions(PromptSampler([_slot("a", 5)], seed=2).next_batch(1, 5)) != first


def test_ratio_mixes_environments() -> None:
    sampler = PromptSampler([_slot("a", 50, ratio=3.0), _slot("b", 50, ratio=1.0)], seed=0)
    picks = Counter(env for step in range(1, 41) for env, _ in sampler.next_batch(step, 10))
    assert 0.65 < picks[0] / 400 < 0.85, picks


def test_state_dict_resumes_exactly() -> None:
    slots = [_slot("a", 7), _slot("b", 3)]
    full = PromptSampler(slots, seed=0)
    batches = [_questions(full.next_batch(step, 4)) for step in range(1, 7)]
    part = PromptSampler(slots, seed=0)
    for step in range(1, 4):
        part.next_batch(step, 4)
    resumed = PromptSampler(slots, seed=0)
    resumed.load_state_dict(part.state_dict())
    assert [_questions(resumed.next_batch(step, 4)) for step in range(4, 7)] == batches[3:]


def test_unknown_environment_in_state_is_refused() -> None:
    with pytest.raises(ValueError, match="environments"):
        PromptSampler([_slot("a", 2)], seed=0).load_state_dict({"zzz": 3})
