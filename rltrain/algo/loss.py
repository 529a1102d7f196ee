"""Policy-gradient losses as pure functions over typed inputs.

One ratio, against the policy that sampled: r_t = π_θ(t) / μ(t), where μ is the sampler's logprob of
token t. It carries both kinds of off-policyness: staleness (a sample drawn `max_async_level` steps
ago by an older adapter) and the engine's numerical mismatch with the trainer (vLLM's kernels, bf16).

    grpo / dr_grpo / dapo:  s_t = min(r_t·A, clip(r_t, 1 − ε_low, 1 + ε_high)·A)        (PPO)
      mismatch "token":     s_t = max(s_t, cap·A) where A < 0: a stale or mismatched token weighs at
                            most `cap` (dual clip; A > 0 is bounded by the clip already)
      mismatch "sequence":  s_t · 1[r̄ ∈ [1/cap, cap]], r̄ the sequence's geometric-mean ratio
    gspo:   the ratio is the sequence's, r̄ = exp(mean_t log r_t), in the same clipped surrogate
    cispo:  s_t = sg(clip(r_t, 1 − ε_low, 1 + ε_high))·A·log π_θ(t): the weight never stops the
            gradient, it only bounds it (MiniMax-M1; ART's defaults ε_low = 1, ε_high = 4)
    loss = −Σ s_t over loss-masked tokens, aggregated per variant, + kl_coef·k3(π_θ, π_base)

Variants differ in aggregation: `grpo` and `gspo` mean over each sequence's tokens, then over
sequences; `dr_grpo` sums over tokens / (sequences × max_tokens); `dapo` and `cispo` sum over tokens /
tokens in the batch. A micro-batch's loss is its share of the full batch's loss (`LossNorm` holds
batch-wide counts), so accumulating micro-batch gradients gives exactly the full-batch gradient.
With samples drawn by the current adapter (serial training) r_t is the engine mismatch alone (~1 in
fp32), and the gradient is the plain policy gradient A·∇log π_θ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

VARIANTS = ("grpo", "dr_grpo", "dapo", "gspo", "cispo")


@dataclass(frozen=True)
class LossConfig:
    variant: str = "grpo"  # one of VARIANTS
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
    inference_logprobs: Tensor  # [B, T] the sampler's logprobs of the same tokens: the old policy μ
    advantages: Tensor  # [B]
    mask: Tensor  # [B, T] 1.0 where the token is trained on
    ref_logprobs: Tensor | None = None  # [B, T] base model (adapter off), only when kl_coef > 0
    staleness: Tensor | None = None  # [B] adapter versions between sampling and this update (stats only)


@dataclass
class LossOutputs:
    loss: Tensor  # scalar: this micro-batch's share of the batch loss
    stats: dict[str, float]  # sums over masked tokens (or sequences); the caller divides


def _seq_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # [B]


def surrogate(inp: LossInputs, cfg: LossConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token surrogate s_t [B, T] (maximised), the detached ratio used [B, T], and a [B, T] mask
    of tokens kept by the mismatch correction."""
    adv = inp.advantages.unsqueeze(-1)  # [B, 1]
    log_ratio = inp.logprobs - inp.inference_logprobs.detach()  # [B, T]
    if cfg.variant == "gspo":
        log_ratio = _seq_mean(log_ratio, inp.mask).unsqueeze(-1).expand_as(log_ratio)  # [B, T]
    ratio = torch.exp(log_ratio)
    keep = torch.ones_like(ratio)
    if cfg.variant == "cispo":
        weight = torch.clamp(ratio.detach(), 1.0 - cfg.eps_low, 1.0 + cfg.eps_high)
        return weight * adv * inp.logprobs, ratio.detach(), keep
    clipped = torch.clamp(ratio, 1.0 - cfg.eps_low, 1.0 + cfg.eps_high)
    s = torch.minimum(ratio * adv, clipped * adv)  # [B, T]
    if cfg.mismatch_mode == "token":
        s = torch.where(adv < 0, torch.maximum(s, cfg.mismatch_cap * adv), s)
    elif cfg.mismatch_mode == "sequence":
        seq = torch.exp(_seq_mean(log_ratio.detach(), inp.mask))  # [B]
        ok = (seq <= cfg.mismatch_cap) & (seq >= 1.0 / cfg.mismatch_cap)  # [B]
        keep = ok.to(ratio.dtype).unsqueeze(-1).expand_as(ratio)  # [B, T]
    return s, ratio.detach(), keep


def _aggregate(per_token: Tensor, mask: Tensor, cfg: LossConfig, norm: LossNorm) -> Tensor:
    masked = per_token * mask  # [B, T]
    if cfg.variant in ("grpo", "gspo"):
        per_seq = masked.sum(-1) / mask.sum(-1).clamp(min=1.0)  # [B]
        return per_seq.sum() / max(norm.num_sequences, 1)
    if cfg.variant in ("dapo", "cispo"):
        return masked.sum() / max(norm.num_tokens, 1)
    if cfg.variant == "dr_grpo":
        return masked.sum() / max(norm.num_sequences * norm.max_tokens, 1)
    raise ValueError(f"algorithm.variant: unknown loss variant {cfg.variant!r}")


def _corrected(cfg: LossConfig, ratio: Tensor, adv: Tensor, keep: Tensor) -> Tensor:
    """[B, T] 1.0 where the mismatch correction acted: the dual clip (token) or a dropped sequence."""
    if cfg.mismatch_mode == "token" and cfg.variant not in ("cispo",):
        return ((ratio > cfg.mismatch_cap) & (adv < 0)).to(ratio.dtype)
    return 1.0 - keep


def _stats(inp: LossInputs, cfg: LossConfig, ratio: Tensor, keep: Tensor, kl: Tensor) -> dict[str, float]:
    adv = inp.advantages.unsqueeze(-1)  # [B, 1]
    m = inp.mask
    if cfg.variant == "cispo":  # the weight was clipped
        clipped = (ratio < 1.0 - cfg.eps_low) | (ratio > 1.0 + cfg.eps_high)
    else:  # the clip took the gradient away
        clipped = ((ratio < 1.0 - cfg.eps_low) & (adv < 0)) | ((ratio > 1.0 + cfg.eps_high) & (adv > 0))
    d = inp.logprobs.detach() - inp.inference_logprobs
    out = {
        "tokens": float(m.sum()),
        "clipped_tokens": float((clipped.to(m.dtype) * m).sum()),
        "kl_sum": float((kl * m).sum()),
        "mismatch_kl_sum": float(((torch.exp(d) - d - 1.0) * m).sum()),  # k3 of KL(sampler || trainer)
        "is_ratio_sum": float((ratio * m).sum()),
        "is_ratio_max": float((ratio * m).max()) if m.numel() else 0.0,
        "is_masked_tokens": float((_corrected(cfg, ratio, adv, keep) * m).sum()),
    }
    if inp.staleness is not None:  # the ratio by how many adapter versions old the sample is
        for age in torch.unique(inp.staleness).tolist():
            rows = (inp.staleness == age).to(m.dtype).unsqueeze(-1) * m  # [B, T]
            out[f"is_ratio_sum/age_{int(age)}"] = float((ratio * rows).sum())
            out[f"tokens/age_{int(age)}"] = float(rows.sum())
    return out


def policy_loss(inp: LossInputs, cfg: LossConfig, norm: LossNorm) -> LossOutputs:
    """The clipped-ratio policy gradient against the sampling policy, with optional k3 KL."""
    if cfg.variant not in VARIANTS:
        raise ValueError(f"algorithm.variant: unknown loss variant {cfg.variant!r}")
    s, ratio, keep = surrogate(inp, cfg)
    per_token = -s
    kl = torch.zeros_like(per_token)
    if cfg.kl_coef > 0.0:
        if inp.ref_logprobs is None:
            raise ValueError("kl_coef > 0 needs ref_logprobs")
        d = inp.ref_logprobs.detach() - inp.logprobs  # [B, T]
        kl = torch.exp(d) - d - 1.0  # k3 estimator, >= 0
        per_token = per_token + cfg.kl_coef * kl
    loss = _aggregate(per_token, inp.mask * keep, cfg, norm)
    with torch.no_grad():
        stats = _stats(inp, cfg, ratio, keep, kl.detach())
    return LossOutputs(loss=loss, stats=stats)
