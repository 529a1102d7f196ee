"""Samples -> padded micro-batches.

Layout per row: [left pad | prompt | completion | right pad]. Every prompt ends at the same column,
so the completion logits are one contiguous slice for the whole micro-batch and the model only
projects those positions to the vocabulary. A micro-batch holds whole GRPO groups (one prompt, so no
prompt padding), which also makes the split independent of how many processes share the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from rltrain.trainer.packing import PackedInputs, pack
from rltrain.types import Sample


@dataclass
class MicroBatch:
    input_ids: Tensor  # [B, P + T]
    attention_mask: Tensor  # [B, P + T]
    position_ids: Tensor  # [B, P + T]
    completion_ids: Tensor  # [B, T]
    mask: Tensor  # [B, T] float, loss mask (0 on padding)
    inference_logprobs: Tensor  # [B, T]
    advantages: Tensor  # [B]
    staleness: Tensor  # [B] adapter versions between each sample's sampling and this update
    filler: bool = False  # trains on nothing: only keeps a rank in step with the others' collectives
    packed: PackedInputs | None = None  # the model's input as packed rows (then input_ids... are unused)

    @property
    def completion_width(self) -> int:
        return int(self.completion_ids.shape[1])

    def to(self, device: torch.device) -> MicroBatch:
        return replace(
            self,
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            position_ids=self.position_ids.to(device),
            completion_ids=self.completion_ids.to(device),
            mask=self.mask.to(device),
            inference_logprobs=self.inference_logprobs.to(device),
            advantages=self.advantages.to(device),
            staleness=self.staleness.to(device),
            packed=self.packed.to(device) if self.packed is not None else None,
        )

    @property
    def positions(self) -> int:
        """Token positions the forward computes, padding included."""
        return int((self.packed.input_ids if self.packed is not None else self.input_ids).numel())

    @property
    def real_tokens(self) -> int:
        """Tokens through the forward that are not padding (a packed prompt counts once)."""
        return self.packed.tokens if self.packed is not None else int(self.attention_mask.sum())


def collate(samples: Sequence[Sample], pad_id: int, version: int = 0, row_tokens: int = 0) -> MicroBatch:
    """The padded layout, and with `row_tokens` > 0 the packed rows the model then reads instead."""
    b = len(samples)
    p = max(len(s.prompt_ids) for s in samples)
    t = max(max(len(s.completion_ids) for s in samples), 1)
    input_ids = torch.full((b, p + t), pad_id, dtype=torch.long)
    attention = torch.zeros((b, p + t), dtype=torch.long)
    completion = torch.full((b, t), pad_id, dtype=torch.long)
    mask = torch.zeros((b, t), dtype=torch.float32)
    inf_lp = torch.zeros((b, t), dtype=torch.float32)
    for i, s in enumerate(samples):
        lp, lc = len(s.prompt_ids), len(s.completion_ids)
        input_ids[i, p - lp : p] = torch.tensor(s.prompt_ids)
        attention[i, p - lp : p + lc] = 1
        if lc:
            input_ids[i, p : p + lc] = torch.tensor(s.completion_ids)
            completion[i, :lc] = torch.tensor(s.completion_ids)
            mask[i, :lc] = torch.tensor(s.loss_mask, dtype=torch.float32)
            inf_lp[i, :lc] = torch.tensor(s.inference_logprobs, dtype=torch.float32)
    # positions count real tokens only, so a left-padded row sees the same positions as unpadded
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # [B, P + T]
    advantages = torch.tensor([s.advantage for s in samples], dtype=torch.float32)
    staleness = torch.tensor([max(version - s.version, 0) for s in samples], dtype=torch.long)
    packed = pack(samples, pad_id, row_tokens) if row_tokens else None
    return MicroBatch(
        input_ids, attention, positions, completion, mask, inf_lp, advantages, staleness, packed=packed
    )


def micro_batches(
    samples: Sequence[Sample], size: int, pad_id: int, *, version: int = 0, row_tokens: int = 0
) -> list[MicroBatch]:
    """Micro-batches of at most `size` rows that never mix groups from different blocks.

    Groups are packed into blocks of `size // group_size` consecutive global group ids, so the
    micro-batches (and with them the float rounding of the gradient) are the same whether one process
    holds the whole batch or each rank holds a contiguous share: 1 and N processes train identically.
    """
    by_group: dict[int, list[Sample]] = {}
    for s in samples:
        by_group.setdefault(s.group_id, []).append(s)
    group_size = max((len(g) for g in by_group.values()), default=1)
    per_block = max(1, size // group_size)
    blocks: dict[int, list[Sample]] = {}
    for gid in sorted(by_group):
        blocks.setdefault(gid // per_block, []).extend(by_group[gid])
    out: list[MicroBatch] = []
    for block in blocks.values():
        out.extend(
            collate(block[i : i + size], pad_id, version, row_tokens) for i in range(0, len(block), size)
        )
    return out
