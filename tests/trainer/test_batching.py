"""Samples -> micro-batches: layout, masks, positions, and the same split on one process or several."""

from __future__ import annotations

import torch

from rltrain.trainer.batching import collate, micro_batches
from rltrain.types import Sample

PAD = 0


def _sample(prompt: list[int], completion: list[int], group: int = 0, adv: float = 1.0) -> Sample:
    n = len(completion)
    return Sample(prompt, completion, [-0.5] * n, [1] * n, 1.0, adv, group)


def test_collate_aligns_prompts_right_and_completions_left() -> None:
    mb = collate([_sample([5, 6, 7], [8, 9]), _sample([5], [8, 9, 10])], PAD)
    # [left pad | prompt | completion | right pad], every prompt ending at column 3
    assert mb.input_ids.tolist() == [[5, 6, 7, 8, 9, 0], [0, 0, 5, 8, 9, 10]]
    assert mb.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    # positions count real tokens only: the padded row sees the positions it would unpadded
    assert mb.position_ids[1, 2:].tolist() == [0, 1, 2, 3]
    assert mb.completion_ids.tolist() == [[8, 9, 0], [8, 9, 10]]
    assert mb.mask.tolist() == [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    assert mb.inference_logprobs[0].tolist() == [-0.5, -0.5, 0.0]
    assert mb.completion_width == 3


def test_loss_mask_is_carried_per_token() -> None:
    s = Sample([1], [2, 3, 4], [0.0, -1.0, 0.0], [1, 0, 1], 0.0, 0.5)
    assert collate([s], PAD).mask.tolist() == [[1.0, 0.0, 1.0]]


def test_micro_batches_keep_groups_and_do_not_depend_on_sharding() -> None:
    samples = [_sample([1, g], [2] * (1 + i), group=g) for g in range(4) for i in range(2)]
    whole = micro_batches(samples, 4, PAD)
    assert [mb.input_ids.shape[0] for mb in whole] == [4, 4]
    # two ranks holding groups {0,1} and {2,3} build exactly the same micro-batches
    halves = micro_batches(samples[:4], 4, PAD) + micro_batches(samples[4:], 4, PAD)
    for a, b in zip(whole, halves, strict=True):
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.advantages, b.advantages)


def test_a_micro_batch_never_mixes_blocks() -> None:
    samples = [_sample([1], [2], group=g) for g in (0, 0, 1, 1, 2, 2)]
    sizes = [mb.input_ids.shape[0] for mb in micro_batches(samples, 4, PAD)]
    assert sizes == [4, 2]  # groups 0-1 fill a block of 4; group 2 starts the next
