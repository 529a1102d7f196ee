"""One optimizer step over a batch of samples: forward, loss, backward per micro-batch, then update."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from rltrain.algo.logprobs import entropy, token_logprobs
from rltrain.algo.loss import LossConfig, LossInputs, LossNorm, policy_loss
from rltrain.trainer.batching import MicroBatch, micro_batches
from rltrain.trainer.model import Policy
from rltrain.types import Sample


def completion_logits(model: Any, mb: MicroBatch) -> Tensor:
    """Logits that predict each completion token, [B, T, V]; only those positions hit lm_head."""
    t = mb.completion_width
    out = model(
        input_ids=mb.input_ids,
        attention_mask=mb.attention_mask,
        position_ids=mb.position_ids,
        use_cache=False,
        logits_to_keep=t + 1,
    )
    return out.logits[:, :-1, :].float()  # [B, T, V]: position P-1+j predicts completion token j


@torch.no_grad()
def sequence_logprobs(policy: Policy, samples: Sequence[Sample], temperature: float) -> list[list[float]]:
    """Trainer logprobs of each sample's completion tokens (the landed check compares these)."""
    was_training = policy.model.training
    policy.model.eval()
    out: list[list[float]] = []
    try:
        for s in samples:
            mb = micro_batches([s], 1, policy.tokenizer.pad_token_id)[0].to(policy.device)
            lp = token_logprobs(completion_logits(policy.model, mb), mb.completion_ids, temperature)
            out.append(lp[0, : len(s.completion_ids)].tolist())
    finally:
        policy.model.train(was_training)
    return out


def _micro_step(
    policy: Policy, mb: MicroBatch, cfg: LossConfig, norm: LossNorm, temp: float
) -> dict[str, float]:
    logits = completion_logits(policy.model, mb)
    logprobs = token_logprobs(logits, mb.completion_ids, temp)  # [B, T]
    ref = None
    if cfg.kl_coef > 0.0:
        with torch.no_grad(), policy.model.disable_adapter():
            ref = token_logprobs(completion_logits(policy.model, mb), mb.completion_ids, temp)
    inputs = LossInputs(
        logprobs=logprobs,
        old_logprobs=logprobs.detach(),  # one update per batch: the sampling policy is the current one
        inference_logprobs=mb.inference_logprobs,
        advantages=mb.advantages,
        mask=mb.mask,
        ref_logprobs=ref,
    )
    out = policy_loss(inputs, cfg, norm)
    out.loss.backward()
    stats = dict(out.stats)
    stats["loss"] = float(out.loss.detach())
    stats["entropy_sum"] = float((entropy(logits.detach(), temp) * mb.mask).sum())
    stats["forward_tokens"] = float(mb.attention_mask.sum())
    return stats


def train_step(
    policy: Policy,
    samples: Sequence[Sample],
    cfg: LossConfig,
    micro_batch_size: int,
    max_tokens: int,
    temperature: float,
    max_grad_norm: float,
) -> dict[str, float]:
    """Accumulate gradients over micro-batches, clip, step. A non-finite loss or gradient skips the update."""
    temp = temperature if temperature > 0 else 1.0
    norm = LossNorm(
        num_sequences=len(samples),
        num_tokens=int(sum(sum(s.loss_mask) for s in samples)),
        max_tokens=max_tokens,
    )
    totals: dict[str, float] = {}
    policy.optimizer.zero_grad(set_to_none=True)
    for mb in micro_batches(samples, micro_batch_size, policy.tokenizer.pad_token_id):
        stats = _micro_step(policy, mb.to(policy.device), cfg, norm, temp)
        for k, v in stats.items():
            totals[k] = max(totals.get(k, v), v) if k.endswith("_max") else totals.get(k, 0.0) + v
    params = policy.trainable_parameters()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    skipped = not (math.isfinite(totals.get("loss", 0.0)) and math.isfinite(grad_norm))
    lr = float(policy.scheduler.get_last_lr()[0])
    if skipped:
        policy.optimizer.zero_grad(set_to_none=True)
    else:
        policy.optimizer.step()
    policy.scheduler.step()
    tokens = max(totals.get("tokens", 0.0), 1.0)
    return {
        "loss": totals.get("loss", 0.0),
        "entropy": totals.get("entropy_sum", 0.0) / tokens,
        "clip_frac": totals.get("clipped_tokens", 0.0) / tokens,
        "kl": totals.get("kl_sum", 0.0) / tokens,
        "mismatch_kl": totals.get("mismatch_kl_sum", 0.0) / tokens,
        "is_ratio_mean": totals.get("is_ratio_sum", 0.0) / tokens,
        "is_ratio_max": totals.get("is_ratio_max", 0.0),
        "is_masked_frac": totals.get("is_masked_tokens", 0.0) / tokens,
        "grad_norm": grad_norm,
        "lr": lr,
        "training_tokens": totals.get("forward_tokens", 0.0),
        "skipped_update": float(skipped),
    }
