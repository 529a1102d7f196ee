"""The transformers rollout backend on the tiny model: shapes, stops, seeds, logprob agreement."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from rltrain.config import parse_config
from rltrain.rollout.hf_backend import HFBackend
from rltrain.trainer.model import Policy, load_policy
from rltrain.trainer.step import sequence_logprobs
from rltrain.types import Sample, SamplingParams

STOP = 2  # <|im_end|> in the tiny tokenizer


def _policy(tiny_model: str, dtype: str = "auto") -> Policy:
    cfg = {"model": "builtin:tiny", "max_steps": 1, "batch_size": 8, "rollouts_per_example": 8}
    return load_policy(parse_config(cfg | {"env": [{"id": "digits"}], "run": {"dtype": dtype}}), tiny_model)


@pytest.fixture(scope="module")
def policy(tiny_model: str) -> Policy:
    return _policy(tiny_model)


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


@pytest.fixture(scope="module")
def bf16_policy(tiny_model: str) -> Policy:
    """The tiny model in bf16 (as on a GPU) with a LoRA adapter that moves it (B != 0)."""
    policy = _policy(tiny_model, "bfloat16")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return policy


def test_bf16_lean_decoder_matches_transformers_and_the_trainer(bf16_policy: Policy) -> None:
    policy = bf16_policy
    assert policy.dtype == torch.bfloat16
    lean = HFBackend(lambda ids: "", 0, policy.device, policy_model=policy.model)
    slow = HFBackend(lambda ids: "", 0, policy.device, policy_model=policy.model, lean=False)
    assert lean.lean and not slow.lean
    greedy = SamplingParams(max_tokens=8, temperature=0.0)
    first = [
        [c.token_ids[:3] for c in b.generate(_prompts(policy), 1, greedy)[0].completions]
        for b in (lean, slow)
    ]
    assert first[0] == first[1]  # later tokens may flip on a bf16 near-tie
    sp = SamplingParams(max_tokens=12, stop_token_ids=(STOP,), seed=7)
    for backend_groups in (lean.generate(_prompts(policy), 4, sp), slow.generate(_prompts(policy), 4, sp)):
        samples = [
            Sample(g.prompt_ids, c.token_ids, c.logprobs, [1] * len(c.token_ids), 0.0, 0.0)
            for g in backend_groups
            for c in g.completions
        ]
        mine = sequence_logprobs(policy, samples, temperature=1.0)
        diffs = [
            abs(x - y)
            for s, m in zip(samples, mine, strict=True)
            for x, y in zip(s.inference_logprobs, m, strict=True)
        ]
        assert sum(diffs) / len(diffs) < 0.05  # bf16 noise, the landed check's bf16 tolerance
