"""Policy-gradient losses as pure functions over typed inputs.

Variants differ only in how token terms are aggregated:
- `grpo`: mean over each sequence's tokens, then mean over sequences;
- `dr_grpo`: sum over tokens / (sequences × max_tokens) — no length bias (use with scale_rewards off);
- `dapo`: sum over tokens / tokens in the batch (token-level), with clip-higher (eps_high > eps_low).

A micro-batch's loss is its share of the full batch's loss (`LossNorm` holds batch-wide counts), so
accumulating micro-batch gradients gives exactly the full-batch gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class LossConfig:
    variant: str = "grpo"  # grpo | dr_grpo | dapo
    eps_low: float = 0.2
    eps_high: float = 0.2
    kl_coef: float = 0.0
    mismatch_mode: str = "token"  # token | sequence | none
    mismatch_cap: float = 2.0


@dataclass(frozen=True)
class LossNorm:
    num_sequences: int  # sequences in the whole batch (every micro-batch, every rank)
    num_tokens: int  # loss-masked tokens in the whole batch
    max_tokens: int  # the sampling budget, dr_grpo's constant


@dataclass
class LossInputs:
    logprobs: Tensor  # [B, T] trainer logprobs of the completion tokens (with grad)
    old_logprobs: Tensor  # [B, T] trainer logprobs of the policy that sampled (no grad)
    inference_logprobs: Tensor  # [B, T] the rollout backend's logprobs of the same tokens
    advantages: Tensor  # [B]
    mask: Tensor  # [B, T] 1.0 where the token is trained on
    ref_logprobs: Tensor | None = None  # [B, T] base model (adapter off), only when kl_coef > 0


@dataclass
class LossOutputs:
    loss: Tensor  # scalar: this micro-batch's share of the batch loss
    stats: dict[str, float]  # sums over masked tokens (or sequences); the caller divides


def mismatch_weights(inp: LossInputs, cfg: LossConfig) -> tuple[Tensor, Tensor]:
    """Truncated importance weights trainer/inference, and a [B, T] mask of tokens kept."""
    log_ratio = (inp.old_logprobs - inp.inference_logprobs).detach()  # [B, T]
    ratio = torch.exp(log_ratio)
    keep = torch.ones_like(ratio)
    if cfg.mismatch_mode == "token":
        return torch.clamp(ratio, max=cfg.mismatch_cap), keep
    if cfg.mismatch_mode == "sequence":
        # geometric mean of the token ratios: a product over long sequences overflows
        n = inp.mask.sum(-1).clamp(min=1.0)  # [B]
        seq_ratio = torch.exp((log_ratio * inp.mask).sum(-1) / n)  # [B]
        ok = (seq_ratio <= cfg.mismatch_cap) & (seq_ratio >= 1.0 / cfg.mismatch_cap)  # [B]
        keep = ok.to(ratio.dtype).unsqueeze(-1).expand_as(ratio)  # [B, T]
        return torch.ones_like(ratio), keep
    return torch.ones_like(ratio), keep


def _capped(raw: Tensor, keep: Tensor, cfg: LossConfig) -> Tensor:
    """[B, T] 1.0 where mismatch correction changed a token: truncated (token) or dropped (sequence)."""
    if cfg.mismatch_mode == "token":
        return (raw > cfg.mismatch_cap).to(raw.dtype)
    return 1.0 - keep


def _aggregate(per_token: Tensor, mask: Tensor, cfg: LossConfig, norm: LossNorm) -> Tensor:
    masked = per_token * mask  # [B, T]
    if cfg.variant == "grpo":
        per_seq = masked.sum(-1) / mask.sum(-1).clamp(min=1.0)  # [B]
        return per_seq.sum() / max(norm.num_sequences, 1)
    if cfg.variant == "dapo":
        return masked.sum() / max(norm.num_tokens, 1)
    if cfg.variant == "dr_grpo":
        return masked.sum() / max(norm.num_sequences * norm.max_tokens, 1)
    raise ValueError(f"algorithm.variant: unknown loss variant {cfg.variant!r}")


def policy_loss(inp: LossInputs, cfg: LossConfig, norm: LossNorm) -> LossOutputs:
    """Clipped-ratio policy gradient (PPO/GRPO), mismatch-corrected, with optional k3 KL."""
    adv = inp.advantages.unsqueeze(-1)  # [B, 1]
    log_ratio = inp.logprobs - inp.old_logprobs.detach()  # [B, T]
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1.0 - cfg.eps_low, 1.0 + cfg.eps_high)
    pg = torch.maximum(-adv * ratio, -adv * clipped)  # [B, T]
    weights, keep = mismatch_weights(inp, cfg)
    mask = inp.mask * keep  # [B, T]
    per_token = pg * weights
    kl = torch.zeros_like(per_token)
    if cfg.kl_coef > 0.0:
        if inp.ref_logprobs is None:
            raise ValueError("kl_coef > 0 needs ref_logprobs")
        d = inp.ref_logprobs.detach() - inp.logprobs  # [B, T]
        kl = torch.exp(d) - d - 1.0  # k3 estimator, >= 0
        per_token = per_token + cfg.kl_coef * kl
    loss = _aggregate(per_token, mask, cfg, norm)
    with torch.no_grad():
        is_clipped = ((ratio < 1.0 - cfg.eps_low) & (adv < 0)) | ((ratio > 1.0 + cfg.eps_high) & (adv > 0))
        raw = torch.exp(inp.old_logprobs - inp.inference_logprobs)  # [B, T]
        d_inf = inp.old_logprobs - inp.inference_logprobs
        mismatch_kl = torch.exp(d_inf) - d_inf - 1.0  # k3 of KL(inference || trainer)
        m = inp.mask
        stats = {
            "tokens": float(m.sum()),
            "clipped_tokens": float((is_clipped.to(m.dtype) * m).sum()),
            "kl_sum": float((kl * m).sum()),
            "mismatch_kl_sum": float((mismatch_kl * m).sum()),
            "is_ratio_sum": float((raw * m).sum()),
            "is_ratio_max": float((raw * m).max()) if m.numel() else 0.0,
            "is_masked_tokens": float((_capped(raw, keep, cfg) * m).sum()),
        }
    return LossOutputs(loss=loss, stats=stats)
