"""The transformers rollout backend on the tiny model: shapes, stops, seeds, logprob agreement."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rltrain.config import parse_config
from rltrain.rollout.hf_backend import HFBackend
from rltrain.trainer.model import Policy, load_policy
from rltrain.trainer.step import sequence_logprobs
from rltrain.types import Sample, SamplingParams

STOP = 2  # <|im_end|> in the tiny tokenizer


@pytest.fixture(scope="module")
def policy(tiny_model: str) -> Policy:
    cfg = parse_config(
        {
            "model": "builtin:tiny",
            "max_steps": 1,
            "batch_size": 8,
            "rollouts_per_example": 8,
            "env": [{"id": "digits"}],
        }
    )
    return load_policy(cfg, tiny_model)


@pytest.fixture(scope="module")
def backend(policy: Policy) -> HFBackend:
    return HFBackend(
        lambda ids: policy.tokenizer.decode(ids, skip_special_tokens=True),
        0,
        policy.device,
        policy_model=policy.model,
    )


def _prompts(policy: Policy) -> list[list[int]]:
    enc = policy.tokenizer
    return [
        enc("<|im_start|>user\nwrite a number<|im_end|>\n<|im_start|>assistant\n")["input_ids"],
        enc("hello")["input_ids"],
    ]


def test_shapes_stops_and_lengths(policy: Policy, backend: HFBackend) -> None:
    sp = SamplingParams(max_tokens=12, stop_token_ids=(STOP,), seed=3)
    groups = backend.generate(_prompts(policy), 5, sp)
    assert [len(g.completions) for g in groups] == [5, 5]
    for g in groups:
        for c in g.completions:
            assert 1 <= len(c.token_ids) == len(c.logprobs) <= 12
            assert all(lp <= 0 for lp in c.logprobs)
            if c.finish_reason == "stop":
                assert c.token_ids[-1] == STOP and STOP not in c.token_ids[:-1]
            else:
                assert len(c.token_ids) == 12 and STOP not in c.token_ids


def test_seeded_repeat_and_shard_invariance(policy: Policy, backend: HFBackend) -> None:
    prompts = _prompts(policy)
    sp = SamplingParams(max_tokens=10, stop_token_ids=(STOP,), seed=11)
    a = backend.generate(prompts, 4, sp)
    b = backend.generate(prompts, 4, sp)
    assert [c.token_ids for g in a for c in g.completions] == [c.token_ids for g in b for c in g.completions]
    # the second prompt alone, told it is global prompt 1, samples what it sampled in the full batch
    alone = backend.generate(prompts[1:], 4, replace(sp, seed_offset=1))
    assert [c.token_ids for c in alone[0].completions] == [c.token_ids for c in a[1].completions]
    other = backend.generate(prompts, 4, replace(sp, seed=12))
    assert [c.token_ids for g in other for c in g.completions] != [
        c.token_ids for g in a for c in g.completions
    ]


def test_logprobs_match_the_trainer_at_temperature(policy: Policy, backend: HFBackend) -> None:
    sp = SamplingParams(max_tokens=16, temperature=0.7, stop_token_ids=(STOP,), seed=5)
    group = backend.generate(_prompts(policy)[:1], 4, sp)[0]
    samples = [
        Sample(group.prompt_ids, c.token_ids, c.logprobs, [1] * len(c.token_ids), 0.0, 0.0)
        for c in group.completions
    ]
    mine = sequence_logprobs(policy, samples, temperature=0.7)
    pairs = [
        (a, b)
        for s, m in zip(samples, mine, strict=True)
        for a, b in zip(s.inference_logprobs, m, strict=True)
    ]
    diffs = [abs(a - b) for a, b in pairs]
    assert sum(diffs) / len(diffs) < 1e-4


def test_greedy_and_top_k_one_agree(policy: Policy, backend: HFBackend) -> None:
    prompts = _prompts(policy)[:1]
    greedy = backend.generate(prompts, 2, SamplingParams(max_tokens=8, temperature=0.0))[0]
    top1 = backend.generate(prompts, 2, SamplingParams(max_tokens=8, top_k=1, seed=1))[0]
    assert greedy.completions[0].token_ids == greedy.completions[1].token_ids == top1.completions[0].token_ids
