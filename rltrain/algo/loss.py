"""Policy-gradient losses as pure functions over typed inputs: the decoupled PPO objective.

Three policies meet in an update. μ sampled the tokens (its logprobs come with each sample): an older
adapter when sampling runs ahead (`max_async_level`), and another engine (vLLM's kernels, bf16).
π_prox, the proximal policy, is the adapter at the start of this update. π_θ is the one being trained.
The objective gives each its own job (Hilton et al. 2022, arXiv 2110.00641; AReaL, arXiv 2505.24298):

    r_t = π_θ(t) / π_prox(t)                  the trust region: how far this update moves
    w_t = sg(min(π_prox(t) / μ(t), cap))      staleness and engine mismatch: a bounded constant weight
    ppo(r, A) = min(r·A, clip(r, 1 − ε_low, 1 + ε_high)·A)

    grpo, dr_grpo, dapo:  s_t = w_t · ppo(r_t, A)
    gspo:                 s_t = w_t · ppo(r̄, A),  r̄ = exp(mean_t log r_t), the sequence's ratio
    cispo:                s_t = w_t · sg(clip(r_t, 1 − ε_low, 1 + ε_high)) · A · log π_θ(t)
    loss = −agg(s) + kl_coef · k3(π_θ, π_base)

`mismatch.mode` picks w: "token" as above (truncated importance sampling); "sequence" the sequence's
geometric-mean ratio exp(mean_t log(π_prox/μ)) for every token, and 0 (the sequence dropped) where
it leaves [1/cap, cap]; "none" w = 1.

The trainer takes one optimizer step per batch, so π_prox = sg(π_θ): r_t is 1 in value, the clip is
inactive, and every variant's gradient is w_t · A · ∇log π_θ(t). A stale sample keeps its gradient,
weighted by how much likelier the update's starting policy finds its token than the sampler did
(at most `cap`). The clip on r_t would act only with several optimizer steps per batch. Centring the
clip on μ instead zeroes the gradient of every token the policy has already moved past 1 ± ε since
sampling, which with LoRA learning rates is most of a one-step-stale batch (issue 23).

Variants differ in aggregation: `grpo` and `gspo` mean over each sequence's tokens, then over
sequences; `dr_grpo` sums over tokens / (sequences × max_tokens); `dapo` and `cispo` sum over tokens /
tokens in the batch. A micro-batch's loss is its share of the full batch's loss (`LossNorm` holds
batch-wide counts), so accumulating micro-batch gradients gives exactly the full-batch gradient.

A new variant is one surrogate function and one `VARIANTS` entry here, its test in
tests/algo/test_loss.py, and its name in `AlgorithmConfig.variant` (a test checks the two agree).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class LossConfig:
    variant: str = "grpo"  # a key of VARIANTS
    eps_low: float | None = None  # clip 1 - eps_low (None: the variant's default)
    eps_high: float | None = None  # clip 1 + eps_high (None: the variant's default, else eps_low)
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
    logprobs: Tensor  # [B, T] trainer logprobs of the completion tokens (with grad): π_θ
    inference_logprobs: Tensor  # [B, T] the sampler's logprobs of the same tokens: μ
    advantages: Tensor  # [B]
    mask: Tensor  # [B, T] 1.0 where the token is trained on
    ref_logprobs: Tensor | None = None  # [B, T] base model (adapter off), only when kl_coef > 0
    staleness: Tensor | None = None  # [B] adapter versions between sampling and this update (stats only)
    proximal_logprobs: Tensor | None = None  # [B, T] π_prox; None: sg(π_θ) (one optimizer step per batch)


@dataclass
class LossOutputs:
    loss: Tensor  # scalar: this micro-batch's share of the batch loss
    stats: dict[str, float]  # sums over masked tokens (or sequences); the caller divides


@dataclass(frozen=True)
class Terms:
    """What a variant's surrogate reads."""

    logprobs: Tensor  # [B, T] log π_θ, with grad
    log_ratio: Tensor  # [B, T] log π_θ − log π_prox, with grad (0 in value with one step per batch)
    weight: Tensor  # [B, T] w: the constant off-policy weight
    adv: Tensor  # [B, 1]
    mask: Tensor  # [B, T]
    low: float  # 1 − ε_low
    high: float  # 1 + ε_high


Surrogate = Callable[[Terms], tuple[Tensor, Tensor]]  # -> s_t [B, T] (maximised), [B, T] bool: clip acted
Aggregate = Callable[[Tensor, Tensor, "LossNorm"], Tensor]  # (per-token loss, mask, norm) -> scalar


def _seq_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # [B]


def _ppo(ratio: Tensor, t: Terms) -> tuple[Tensor, Tensor]:
    """w · min(r·A, clip(r)·A), and where the clip took the gradient away."""
    s = torch.minimum(ratio * t.adv, torch.clamp(ratio, t.low, t.high) * t.adv)  # [B, T]
    r = ratio.detach()
    acted = ((r < t.low) & (t.adv < 0)) | ((r > t.high) & (t.adv > 0))  # [B, T]
    return t.weight * s, acted


def ppo_token(t: Terms) -> tuple[Tensor, Tensor]:
    """grpo, dr_grpo, dapo: the clipped surrogate on each token's ratio to π_prox."""
    return _ppo(torch.exp(t.log_ratio), t)


def ppo_sequence(t: Terms) -> tuple[Tensor, Tensor]:
    """gspo: the clipped surrogate on the sequence's geometric-mean ratio to π_prox."""
    seq = _seq_mean(t.log_ratio, t.mask).unsqueeze(-1).expand_as(t.log_ratio)  # [B, T]
    return _ppo(torch.exp(seq), t)


def cispo(t: Terms) -> tuple[Tensor, Tensor]:
    """The clipped ratio to π_prox as a stop-gradient weight on A · log π_θ: it bounds, never stops."""
    r = torch.exp(t.log_ratio.detach())  # [B, T]
    return t.weight * torch.clamp(r, t.low, t.high) * t.adv * t.logprobs, (r < t.low) | (r > t.high)


def sequence_mean(per_token: Tensor, mask: Tensor, norm: LossNorm) -> Tensor:
    """Mean over each sequence's tokens, then over the batch's sequences."""
    return _seq_mean(per_token, mask).sum() / max(norm.num_sequences, 1)


def token_mean(per_token: Tensor, mask: Tensor, norm: LossNorm) -> Tensor:
    """Sum over tokens / the batch's tokens."""
    return (per_token * mask).sum() / max(norm.num_tokens, 1)


def budget_mean(per_token: Tensor, mask: Tensor, norm: LossNorm) -> Tensor:
    """Sum over tokens / (sequences × max_tokens): no length bias (Dr. GRPO)."""
    return (per_token * mask).sum() / max(norm.num_sequences * norm.max_tokens, 1)


@dataclass(frozen=True)
class Variant:
    surrogate: Surrogate
    aggregate: Aggregate
    eps_low: float = 0.2
    eps_high: float | None = None  # None: eps_low


VARIANTS: dict[str, Variant] = {
    "grpo": Variant(ppo_token, sequence_mean),
    "dr_grpo": Variant(ppo_token, budget_mean),
    "dapo": Variant(ppo_token, token_mean, eps_high=0.28),  # clip-higher
    "gspo": Variant(ppo_sequence, sequence_mean, 3e-4, 4e-4),  # GSPO's paper
    "cispo": Variant(cispo, token_mean, 1.0, 4.0),  # ART's defaults
}


def clip_range(cfg: LossConfig) -> tuple[float, float]:
    """(1 − ε_low, 1 + ε_high), the config's ε or the variant's defaults."""
    v = variant(cfg.variant)
    low = cfg.eps_low if cfg.eps_low is not None else v.eps_low
    high = cfg.eps_high if cfg.eps_high is not None else (v.eps_high if v.eps_high is not None else low)
    return 1.0 - low, 1.0 + high


def variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"algorithm.variant: unknown loss variant {name!r} (one of {', '.join(VARIANTS)})")
    return VARIANTS[name]


def off_policy_weight(prox: Tensor, mu: Tensor, mask: Tensor, cfg: LossConfig) -> tuple[Tensor, Tensor]:
    """The constant weight w [B, T] (see mismatch.mode), and [B, T] bool where it corrected: a token's
    ratio truncated at cap, or a sequence dropped."""
    ratio = torch.exp(prox - mu)  # [B, T] π_prox / μ
    if cfg.mismatch_mode == "token":
        return ratio.clamp(max=cfg.mismatch_cap), ratio > cfg.mismatch_cap
    if cfg.mismatch_mode == "sequence":
        seq = torch.exp(_seq_mean(prox - mu, mask))  # [B]
        ok = (seq <= cfg.mismatch_cap) & (seq >= 1.0 / cfg.mismatch_cap)  # [B]
        w = torch.where(ok, seq, torch.zeros_like(seq)).unsqueeze(-1).expand_as(ratio)  # [B, T]
        return w, (~ok).unsqueeze(-1).expand_as(ratio)
    if cfg.mismatch_mode == "none":
        return torch.ones_like(ratio), torch.zeros_like(ratio, dtype=torch.bool)
    raise ValueError(f"algorithm.mismatch.mode: unknown mode {cfg.mismatch_mode!r} (token, sequence, none)")


def _k3(d: Tensor) -> Tensor:
    """k3 = e^d − d − 1 ≥ 0 with d = log(q/p) on tokens drawn from p: an estimate of KL(p || q)."""
    return torch.exp(d) - d - 1.0


def _stats(inp: LossInputs, prox: Tensor, acted: Tensor, corrected: Tensor, kl: Tensor) -> dict[str, float]:
    m = inp.mask
    ratio = torch.exp(prox - inp.inference_logprobs)  # [B, T] π_prox / μ
    drift = _k3(prox - inp.inference_logprobs) * m  # [B, T] k3 of KL(μ || π_prox)
    age = inp.staleness if inp.staleness is not None else torch.zeros_like(m[:, 0], dtype=torch.long)
    fresh = (age == 0).to(m.dtype).unsqueeze(-1) * m  # [B, T] tokens the current adapter sampled
    out = {
        "tokens": float(m.sum()),
        "clipped_tokens": float((acted.to(m.dtype) * m).sum()),
        "kl_sum": float((kl * m).sum()),
        # the engine/trainer gap only where the sampler was this adapter; older samples' drift apart
        "mismatch_kl_sum": float((drift * fresh).sum()),
        "fresh_tokens": float(fresh.sum()),
        "stale_kl_sum": float((drift * (m - fresh)).sum()),
        "is_ratio_sum": float((ratio * m).sum()),
        "is_ratio_max": float((ratio * m).max()) if m.numel() else 0.0,
        "is_masked_tokens": float((corrected.to(m.dtype) * m).sum()),
    }
    for a in torch.unique(age).tolist():  # the ratio by how many adapter versions old the sample is
        rows = (age == a).to(m.dtype).unsqueeze(-1) * m  # [B, T]
        out[f"is_ratio_sum/age_{int(a)}"] = float((ratio * rows).sum())
        out[f"tokens/age_{int(a)}"] = float(rows.sum())
    return out


def policy_loss(inp: LossInputs, cfg: LossConfig, norm: LossNorm) -> LossOutputs:
    """The decoupled objective (module docstring) for `cfg.variant`, with optional k3 KL to the base."""
    v = variant(cfg.variant)
    low, high = clip_range(cfg)
    prox = (inp.proximal_logprobs if inp.proximal_logprobs is not None else inp.logprobs).detach()  # [B, T]
    mu = inp.inference_logprobs.detach()  # [B, T]
    weight, corrected = off_policy_weight(prox, mu, inp.mask, cfg)
    adv = inp.advantages.unsqueeze(-1)  # [B, 1]
    terms = Terms(inp.logprobs, inp.logprobs - prox, weight, adv, inp.mask, low, high)
    s, acted = v.surrogate(terms)
    per_token = -s  # [B, T]
    kl = torch.zeros_like(per_token)
    if cfg.kl_coef > 0.0:
        if inp.ref_logprobs is None:
            raise ValueError("kl_coef > 0 needs ref_logprobs")
        kl = _k3(inp.ref_logprobs.detach() - inp.logprobs)  # [B, T] k3 of KL(π_θ || π_base)
        per_token = per_token + cfg.kl_coef * kl
    loss = v.aggregate(per_token, inp.mask, norm)
    with torch.no_grad():
        stats = _stats(inp, prox, acted, corrected, kl.detach())
    return LossOutputs(loss=loss, stats=stats)
