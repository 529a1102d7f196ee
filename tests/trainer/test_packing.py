"""Packed rows (trainer/packing.py): each prompt once, its completions after it, no padding; the
logprobs and the gradient are the padded layout's to float tolerance."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rltrain.config import parse_config
from rltrain.models import resolve_model_path
from rltrain.trainer.batching import micro_batches
from rltrain.trainer.model import load_policy
from rltrain.trainer.packing import pack, packing_supported
from rltrain.trainer.step import TrainSettings, train_step
from rltrain.types import Sample

PAD = 0


def _sample(prompt: list[int], completion: list[int], group: int, adv: float = 1.0) -> Sample:
    n = len(completion)
    return Sample(prompt, completion, [-0.5] * n, [1] * n, 1.0, adv, group)


def test_a_group_shares_its_prompt_and_a_completion_sees_only_the_prompt_and_itself() -> None:
    samples = [_sample([1, 2, 3], [4, 5], 0), _sample([1, 2, 3], [6], 0), _sample([7, 8], [9, 10, 11], 1)]
    pk = pack(samples, PAD, row_tokens=1024)
    assert pk.input_ids.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]
    assert pk.position_ids.tolist() == [[0, 1, 2, 3, 4, 3, 0, 1, 2, 3, 4]]
    assert pk.tokens == 11  # 3 + 2 + 1 + 2 + 3: the padded layout runs 3 + 2 + 3 + 1 + 2 + 3 (+ padding)
    seen = pk.allowed[0, 0]
    assert seen[5].nonzero().flatten().tolist() == [0, 1, 2, 5]  # token 6: its prompt and itself, not 4, 5
    assert seen[4].nonzero().flatten().tolist() == [0, 1, 2, 3, 4]
    assert seen[9].nonzero().flatten().tolist() == [6, 7, 8, 9]  # group 1 never sees group 0
    # the logits that predict each completion token: the prompt's last position, then the token before
    predicting = pk.keep[pk.pick[:, 1]].tolist()
    assert list(zip(pk.where.tolist(), predicting, strict=True)) == [
        ([0, 0], 2),
        ([0, 1], 3),
        ([1, 0], 2),
        ([2, 0], 7),
        ([2, 1], 8),
        ([2, 2], 9),
    ]


def test_a_full_row_continues_in_the_next_with_the_prompt_repeated() -> None:
    samples = [_sample([1, 2, 3], [4, 5], 0), _sample([1, 2, 3], [6, 7], 0), _sample([1, 2, 3], [8], 0)]
    pk = pack(samples, PAD, row_tokens=7)
    assert pk.input_ids.tolist() == [[1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 8, PAD, PAD, PAD]]
    assert pk.tokens == 11
    assert pk.allowed[1, 0, 4].nonzero().flatten().tolist() == [4]  # padding sees only itself


def test_only_full_attention_families_pack() -> None:
    from transformers import AutoConfig

    def family(name: str) -> bool:
        return packing_supported(AutoConfig.from_pretrained(resolve_model_path(name)))

    assert family("builtin:tiny") and family("builtin:tiny-llama")
    for hybrid in ("builtin:tiny-qwen3_5", "builtin:tiny-nemotron_h", "builtin:tiny-gpt_oss"):
        assert not family(hybrid), hybrid  # recurrent layers or a sliding window would cross samples


def _samples() -> list[Sample]:
    """Three groups, different prompts, ragged completions, mixed advantages, a masked token."""
    out = []
    for g, prompt in enumerate(([5, 17, 40, 41, 9], [8, 3], [22, 23, 24, 25, 26, 27, 28])):
        for i in range(4):
            completion = [30 + (7 * g + 3 * i + k) % 50 for k in range(2 + (5 * i + g) % 7)]
            s = _sample(prompt, completion, g, adv=(-1.0) ** i * (0.5 + 0.1 * g))
            if i == 1:
                s = dataclasses.replace(s, loss_mask=[1] * (len(completion) - 1) + [0])
            out.append(s)
    return out


@pytest.mark.parametrize("model", ["builtin:tiny", "builtin:tiny-llama"])
@pytest.mark.parametrize("variant", ["dapo", "grpo"])
def test_packed_rows_train_exactly_like_padded_ones(model: str, variant: str) -> None:
    cfg = {
        "model": model,
        "max_steps": 1,
        "batch_size": 8,
        "rollouts_per_example": 4,
        "env": [{"id": "digits"}],
    }
    cfg |= {"algorithm": {"variant": variant, "micro_batch_size": 8, "kl_coef": 0.05}}
    grads, metrics = [], []
    for row_tokens in (0, 1024, 24):  # padded; one row per micro-batch; rows split mid-group
        torch.manual_seed(0)
        policy = load_policy(parse_config(cfg), resolve_model_path(model))
        for p in policy.trainable_parameters():  # B = 0 at init would hide the adapter's share
            torch.nn.init.normal_(p, std=0.02)
        policy.optimizer = torch.optim.SGD(policy.trainable_parameters(), lr=0.0)  # keep the weights
        settings = dataclasses.replace(TrainSettings.from_config(parse_config(cfg)), row_tokens=row_tokens)
        metrics.append(train_step(policy, _samples(), settings))
        grads.append([p.grad.clone() for p in policy.trainable_parameters()])
    for m in metrics[1:]:
        for key in ("loss", "kl", "mismatch_kl", "entropy", "is_ratio_mean", "grad_norm"):
            assert m[key] == pytest.approx(metrics[0][key], rel=1e-4, abs=1e-6), key
    for other in grads[1:]:
        for a, b in zip(grads[0], other, strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    assert metrics[0]["pad_frac"] > 0.3 and metrics[1]["pad_frac"] == 0.0  # no padding in one row
    # each prompt once: 3 prompts + 12 completions, against a prompt per sample
    completions = sum(len(s.completion_ids) for s in _samples())
    assert metrics[1]["training_tokens"] == 5 + 2 + 7 + completions
    assert metrics[0]["training_tokens"] == 4 * (5 + 2 + 7) + completions


def test_micro_batches_pack_only_when_asked() -> None:
    packed = micro_batches(_samples(), 8, PAD, row_tokens=1024)
    assert all(mb.packed is not None for mb in packed)
    assert all(mb.packed is None for mb in micro_batches(_samples(), 8, PAD))
