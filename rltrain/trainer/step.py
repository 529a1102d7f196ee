"""One optimizer step over a batch of samples: forward, loss, backward per micro-batch, then update."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from rltrain.algo.logprobs import entropy, token_logprobs
from rltrain.algo.loss import LossConfig, LossInputs, LossNorm, policy_loss
from rltrain.config import Config
from rltrain.distributed import Dist
from rltrain.trainer.batching import MicroBatch, micro_batches
from rltrain.trainer.fsdp import full
from rltrain.trainer.model import Policy
from rltrain.trainer.packing import packing_supported
from rltrain.types import Sample


@dataclass(frozen=True)
class TrainSettings:
    """What one optimizer step needs besides the samples."""

    loss: LossConfig
    micro_batch_size: int  # sequences per forward/backward
    max_tokens: int  # the sampling budget (dr_grpo's normaliser)
    temperature: float  # the sampler's: logprobs are of logits / temperature
    max_grad_norm: float
    row_tokens: int = 0  # packed rows of at most this many tokens (0: padded rows, a prompt per sample)

    @classmethod
    def from_config(cls, cfg: Config) -> TrainSettings:
        a = cfg.algorithm
        loss = LossConfig(
            variant=a.variant,
            eps_low=a.clip_eps_low,
            eps_high=a.clip_eps_high,
            kl_coef=a.kl_coef,
            mismatch_mode=a.mismatch.mode,
            mismatch_cap=a.mismatch.cap,
        )
        temp = cfg.sampling.temperature
        return cls(
            loss,
            a.micro_batch_size,
            cfg.sampling.max_tokens,
            temp if temp > 0 else 1.0,
            a.max_grad_norm,
            a.pack_tokens,
        )


class NonFiniteUpdates:
    """Counts skipped (non-finite) updates; `limit` in a row fails the run."""

    def __init__(self, limit: int) -> None:
        self.limit, self.total, self.in_a_row = limit, 0, 0

    def observe(self, train_metrics: dict[str, float]) -> None:
        skipped = bool(train_metrics.get("skipped_update"))
        self.total += skipped
        self.in_a_row = self.in_a_row + 1 if skipped else 0
        if self.in_a_row >= self.limit:
            raise FloatingPointError(f"{self.limit} consecutive updates skipped: loss or gradient not finite")


def completion_logits(model: Any, mb: MicroBatch) -> Tensor:
    """Logits that predict each completion token, [B, T, V]; only those positions hit lm_head."""
    if mb.packed is not None:
        return _packed_logits(model, mb)
    t = mb.completion_width
    out = model(
        input_ids=mb.input_ids,
        attention_mask=mb.attention_mask,
        position_ids=mb.position_ids,
        use_cache=False,
        logits_to_keep=t + 1,
    )
    return out.logits[:, :-1, :].float()  # [B, T, V]: position P-1+j predicts completion token j


def _packed_logits(model: Any, mb: MicroBatch) -> Tensor:
    """The same logits from packed rows (trainer/packing.py), scattered back to [B, T, V]."""
    pk = mb.packed
    assert pk is not None
    mask = pk.allowed  # [R, 1, L, L] bool, as sdpa and flex take it; eager adds a float mask
    if model.config._attn_implementation == "eager":
        dtype = next(model.parameters()).dtype
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(dtype).min
        )
    out = model(
        input_ids=pk.input_ids,
        attention_mask=mask,
        position_ids=pk.position_ids,
        use_cache=False,
        logits_to_keep=pk.keep,
    )
    flat = out.logits[pk.pick[:, 0], pk.pick[:, 1]].float()  # [N, V]
    b, t = mb.completion_ids.shape
    return flat.new_zeros(b, t, flat.shape[-1]).index_put((pk.where[:, 0], pk.where[:, 1]), flat)  # [B, T, V]


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
        inference_logprobs=mb.inference_logprobs,  # μ, the sampler; π_prox is these weights, detached
        advantages=mb.advantages,
        mask=mb.mask,
        ref_logprobs=ref,
        staleness=mb.staleness,
    )
    out = policy_loss(inputs, cfg, norm)
    out.loss.backward()
    stats = dict(out.stats)
    stats["age_sum"] = float(mb.staleness.sum())
    stats["sequences"] = float(mb.staleness.numel())
    stats["age_max"] = float(mb.staleness.max()) if mb.staleness.numel() else 0.0
    stats["loss"] = float(out.loss.detach())
    stats["entropy_sum"] = float((entropy(logits.detach(), temp) * mb.mask).sum())
    stats["forward_tokens"] = float(mb.real_tokens)
    stats["positions"] = float(mb.positions)
    return stats


SUM_KEYS = (
    "loss",
    "tokens",
    "clipped_tokens",
    "kl_sum",
    "mismatch_kl_sum",
    "fresh_tokens",
    "stale_kl_sum",
    "is_ratio_sum",
    "is_masked_tokens",
    "entropy_sum",
    "forward_tokens",
    "positions",
    "age_sum",
    "sequences",
)
MAX_KEYS = ("is_ratio_max", "age_max")


def _filler(pad_id: int) -> MicroBatch:
    """A one-token micro-batch that trains on nothing: its forward/backward only joins the collectives."""
    nothing = Sample([pad_id], [pad_id], [0.0], [0], 0.0, 0.0)
    return replace(micro_batches([nothing], 1, pad_id)[0], filler=True)


def _accumulate(
    policy: Policy, batches: Sequence[MicroBatch], settings: TrainSettings, norm: LossNorm
) -> tuple[dict[str, float], list[torch.Tensor]]:
    """Per micro-batch forward/backward; gradients summed in float64 so that the grouping of the sum
    (one process, or partial sums per rank) does not change the float32 result."""
    totals = dict.fromkeys(SUM_KEYS + MAX_KEYS, 0.0)
    params = policy.trainable_parameters()
    grads = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    for mb in batches:
        try:
            stats = _micro_step(policy, mb.to(policy.device), settings.loss, norm, settings.temperature)
        except torch.OutOfMemoryError:
            raise RuntimeError(
                f"out of memory in a micro-batch of {mb.input_ids.shape[0]} sequences ({mb.positions} "
                f"token positions): lower algorithm.micro_batch_size (now {settings.micro_batch_size}), "
                f"algorithm.pack_tokens (now {settings.row_tokens}) or sampling.max_tokens (now "
                f"{settings.max_tokens})"
            ) from None
        for g, p in zip(grads, params, strict=True):
            if p.grad is not None:
                g += p.grad.double()
                p.grad = None
        if mb.filler:
            continue
        for k, v in stats.items():
            totals[k] = max(totals.get(k, 0.0), v) if k.endswith("_max") else totals.get(k, 0.0) + v
    return totals, grads


def _reduce(
    policy: Policy, totals: dict[str, float], grads: list[torch.Tensor], dist: Dist
) -> dict[str, float]:
    """Sum gradients and statistics over ranks; every rank then takes the same optimizer step."""
    if not policy.sharded:  # FSDP already summed them, in its reduce-scatter after each backward
        dist.all_reduce_sum(grads)
    for p, g in zip(policy.trainable_parameters(), grads, strict=True):
        p.grad = g.to(p.dtype)
    sums = torch.tensor([totals[k] for k in SUM_KEYS], dtype=torch.float64)
    dist.all_reduce_sum([sums])
    out = dict(zip(SUM_KEYS, sums.tolist(), strict=True))
    # maxima and the per-age sums (their keys depend on the ages present): gathered as plain dicts
    extra = {k: v for k, v in totals.items() if k not in SUM_KEYS}
    for theirs in dist.all_gather(extra):
        for k, v in theirs.items():
            out[k] = max(out.get(k, 0.0), v) if k in MAX_KEYS else out.get(k, 0.0) + v
    return out


def train_step(
    policy: Policy, samples: Sequence[Sample], settings: TrainSettings, dist: Dist | None = None
) -> dict[str, float]:
    """Accumulate gradients over micro-batches (and ranks), clip, step. Non-finite loss or gradient: skip."""
    dist = dist or Dist()
    counts = torch.tensor([len(samples), sum(sum(s.loss_mask) for s in samples)], dtype=torch.float64)
    dist.all_reduce_sum([counts])  # the loss is normalised over the global batch
    norm = LossNorm(num_sequences=int(counts[0]), num_tokens=int(counts[1]), max_tokens=settings.max_tokens)
    policy.optimizer.zero_grad(set_to_none=True)
    pad_id = policy.tokenizer.pad_token_id
    rows = settings.row_tokens if packing_supported(policy.model.config) else 0
    batches = micro_batches(
        samples, settings.micro_batch_size, pad_id, version=policy.version, row_tokens=rows
    )
    if policy.sharded:  # every forward/backward is a collective: all ranks run as many
        batches += [_filler(pad_id)] * (max(dist.all_gather(len(batches))) - len(batches))
    totals = _reduce(policy, *_accumulate(policy, batches, settings, norm), dist)
    params = policy.trainable_parameters()
    grad_norm = float(full(torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)))
    skipped = not (math.isfinite(totals["loss"]) and math.isfinite(grad_norm))
    lr = float(policy.scheduler.get_last_lr()[0])
    if skipped:
        policy.optimizer.zero_grad(set_to_none=True)
    else:
        with policy.lock:  # a sampler snapshotting the live weights never sees half an update
            policy.optimizer.step()
    policy.scheduler.step()
    policy.version += 1
    return _metrics(totals, grad_norm, lr, skipped)


def _metrics(totals: dict[str, float], grad_norm: float, lr: float, skipped: bool) -> dict[str, float]:
    tokens = max(totals["tokens"], 1.0)
    out = {
        "loss": totals["loss"],
        "entropy": totals["entropy_sum"] / tokens,
        "clip_frac": totals["clipped_tokens"] / tokens,
        "kl": totals["kl_sum"] / tokens,
        "is_ratio_mean": totals["is_ratio_sum"] / tokens,
        "is_ratio_max": totals["is_ratio_max"],
        "is_masked_frac": totals["is_masked_tokens"] / tokens,
        "grad_norm": grad_norm,
        "lr": lr,
        "training_tokens": totals["forward_tokens"],
        "pad_frac": 1.0 - totals["forward_tokens"] / max(totals["positions"], 1.0),
        "skipped_update": float(skipped),
        "staleness_mean": totals["age_sum"] / max(totals["sequences"], 1.0),
        "staleness_max": totals["age_max"],
    }
    return _by_age(totals) | _drift(totals) | out


def _drift(totals: dict[str, float]) -> dict[str, float]:
    """KL(μ || π_prox) per token: `mismatch_kl` on the current adapter's own samples (the engine/trainer
    gap), `stale_kl` on older ones (the policy's drift since); each only when such samples exist."""
    out = {}
    fresh, stale = totals["fresh_tokens"], totals["tokens"] - totals["fresh_tokens"]
    if fresh > 0:
        out["mismatch_kl"] = totals["mismatch_kl_sum"] / fresh
    if stale > 0:
        out["stale_kl"] = totals["stale_kl_sum"] / stale
    return out


def _by_age(totals: dict[str, float]) -> dict[str, float]:
    """The mean importance ratio of the samples drawn k adapter versions ago, for each age k present."""
    out = {}
    for key, value in totals.items():
        if key.startswith("is_ratio_sum/age_"):
            age = key.rsplit("_", 1)[1]
            out[f"is_ratio_mean/age_{age}"] = value / max(totals.get(f"tokens/age_{age}", 0.0), 1.0)
    return out
