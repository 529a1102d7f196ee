"""Packed rows: each prompt once, its completions after it, no padding inside a row.

A GRPO group repeats one prompt `rollouts_per_example` times; the padded layout (batching.collate)
runs it through the model once per sample. Here a row holds units laid end to end, each unit one
prompt followed by every completion sampled from it:

    [P_a | C_a1 | C_a2 | ... | P_b | C_b1 | ...]      positions: P 0..p-1, each C p..p+c-1

and a 4D mask lets a completion token see its unit's prompt and the earlier tokens of its own
completion only. That is the attention of the padded layout exactly, so logprobs and gradients are
the same (tests/trainer/test_packing.py) while the prompt runs forward and backward once per unit.
The mask goes to transformers as a custom 4D mask (masking_utils passes one through as is), which
every attention implementation honours; only attention layers read it, so families with recurrent
or sliding-window layers keep the padded layout (`packing_supported`).

Rows are filled up to `row_tokens`; a unit whose completions do not fit continues in the next row
with its prompt repeated. Rows are padded to the longest row of the micro-batch only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rltrain.types import Sample

FULL_ATTENTION_FAMILIES = ("llama", "qwen2", "qwen3", "mistral")


def packing_supported(config: object) -> bool:
    """Every layer is full causal attention (no recurrent state, no sliding window): a packed row's
    mask then decides alone what each token sees."""
    family = getattr(config, "model_type", None)
    if family not in FULL_ATTENTION_FAMILIES or getattr(config, "use_sliding_window", False):
        return False
    if family == "mistral" and getattr(config, "sliding_window", None):
        return False
    if (getattr(config, "_attn_implementation", None) or "sdpa") not in ("sdpa", "eager"):
        return False  # flash attention takes no custom mask
    return all(t == "full_attention" for t in getattr(config, "layer_types", None) or [])


@dataclass
class _Row:
    ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    segment: list[int] = field(default_factory=list)  # the unit of each token (attention stays inside)
    branch: list[int] = field(default_factory=list)  # -1: the prompt; else the completion's index
    predicts: list[tuple[int, int, int]] = field(default_factory=list)  # (position in row, sample, t)

    def add_prompt(self, prompt: Sequence[int], unit: int) -> None:
        self.ids += prompt
        self.positions += range(len(prompt))
        self.segment += [unit] * len(prompt)
        self.branch += [-1] * len(prompt)

    def add_completion(self, sample: Sample, index: int, unit: int, prompt_end: int) -> None:
        """`prompt_end`: the row position of the unit's last prompt token (it predicts token 0)."""
        start, p = len(self.ids), len(sample.prompt_ids)
        self.ids += sample.completion_ids
        self.positions += range(p, p + len(sample.completion_ids))
        self.segment += [unit] * len(sample.completion_ids)
        self.branch += [index] * len(sample.completion_ids)
        previous = [prompt_end] + list(range(start, start + len(sample.completion_ids) - 1))
        self.predicts += [(pos, index, t) for t, pos in enumerate(previous)]


@dataclass
class PackedInputs:
    input_ids: Tensor  # [R, L]
    position_ids: Tensor  # [R, L]
    allowed: Tensor  # [R, 1, L, L] bool: query i may attend to key j
    keep: Tensor  # [K] sorted row positions whose logits are needed (logits_to_keep)
    pick: Tensor  # [N, 2] (row, index into keep) of the logits predicting each completion token
    where: Tensor  # [N, 2] (sample, t): that token's place in the [B, T] completion tensors
    tokens: int  # real tokens in the rows (the rest of R x L is padding)

    def to(self, device: torch.device) -> PackedInputs:
        moved = {k: getattr(self, k).to(device) for k in ("input_ids", "position_ids", "allowed", "keep")}
        return PackedInputs(
            **moved, pick=self.pick.to(device), where=self.where.to(device), tokens=self.tokens
        )


def _units(samples: Sequence[Sample]) -> list[tuple[list[int], list[int]]]:
    """(prompt, indices of the samples sampled from it), in first-seen order."""
    units: dict[tuple[int, tuple[int, ...]], list[int]] = {}
    for i, s in enumerate(samples):
        units.setdefault((s.group_id, tuple(s.prompt_ids)), []).append(i)
    return [(list(key[1]), members) for key, members in units.items()]


def _fill(samples: Sequence[Sample], row_tokens: int) -> list[_Row]:
    rows: list[_Row] = [_Row()]
    for unit, (prompt, members) in enumerate(_units(samples)):
        started = False
        for i in members:
            need = len(samples[i].completion_ids) + (0 if started else len(prompt))
            if rows[-1].ids and len(rows[-1].ids) + need > row_tokens:
                rows.append(_Row())
                started = False
            if not started:  # this unit's prompt, first in this row
                rows[-1].add_prompt(prompt, unit)
                prompt_end, started = len(rows[-1].ids) - 1, True
            rows[-1].add_completion(samples[i], i, unit, prompt_end)
    return rows


def _allowed(row: _Row, length: int) -> Tensor:
    """[L, L] bool: causal, inside the unit, and a completion sees the prompt or its own tokens."""
    n = len(row.ids)
    seg = torch.tensor(row.segment)
    branch = torch.tensor(row.branch)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    same_unit = seg[:, None] == seg[None, :]
    visible = (branch[None, :] == -1) | (branch[:, None] == branch[None, :])
    out = torch.zeros(length, length, dtype=torch.bool)
    out[:n, :n] = causal & same_unit & visible
    out[n:, n:] = torch.eye(length - n, dtype=torch.bool)  # padding sees itself: no empty softmax row
    return out


def pack(samples: Sequence[Sample], pad_id: int, row_tokens: int) -> PackedInputs:
    """The samples of one micro-batch as packed rows of at most `row_tokens` tokens (a unit's prompt
    and one completion always fit: a longer pair gets a row of its own)."""
    rows = _fill(samples, row_tokens)
    length = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), length), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row.ids)] = torch.tensor(row.ids)
        positions[r, : len(row.ids)] = torch.tensor(row.positions)
    allowed = torch.stack([_allowed(row, length) for row in rows])[:, None]  # [R, 1, L, L]
    at = torch.tensor([(r, pos) for r, row in enumerate(rows) for pos, _, _ in row.predicts]).view(-1, 2)
    keep = torch.unique(at[:, 1])  # [K] sorted: one logits_to_keep for every row
    pick = torch.stack([at[:, 0], torch.searchsorted(keep, at[:, 1].contiguous())], dim=1)  # [N, 2]
    where = torch.tensor([(i, t) for row in rows for _, i, t in row.predicts]).view(-1, 2)
    return PackedInputs(ids, positions, allowed, keep, pick, where, sum(len(r.ids) for r in rows))
