"""The decoupled policy loss against hand-computed numbers: the trust region (clip) is centred on the
proximal policy π_prox (the update's starting weights), and the sampler μ enters only through the
constant weight w = min(π_prox/μ, cap). Every variant, both mismatch modes, k3 KL, the split of the
sampler's drift into mismatch_kl (current adapter) and stale_kl (older ones), and micro-batches that
add up to the full batch."""

import math
from typing import get_args

import pytest
import torch

from rltrain.algo.loss import VARIANTS, LossConfig, LossInputs, LossNorm, clip_range, policy_loss
from rltrain.config_sections import AlgorithmConfig


def _inputs(logprobs, advantages, mask, sampler=None, ref=None, staleness=None, prox=None) -> LossInputs:
    lp = torch.tensor(logprobs, dtype=torch.float64, requires_grad=True)
    mu = torch.tensor(sampler, dtype=torch.float64) if sampler is not None else lp.detach().clone()
    return LossInputs(
        logprobs=lp,
        inference_logprobs=mu,
        advantages=torch.tensor(advantages, dtype=torch.float64),
        mask=torch.tensor(mask, dtype=torch.float64),
        ref_logprobs=torch.tensor(ref, dtype=torch.float64) if ref is not None else None,
        staleness=torch.tensor(staleness) if staleness is not None else None,
        proximal_logprobs=torch.tensor(prox, dtype=torch.float64) if prox is not None else None,
    )


LP = [[-1.0, -2.0], [-0.5, -3.0]]
MASK = [[1.0, 1.0], [1.0, 0.0]]
ADV = [1.0, -0.5]
NORM = LossNorm(num_sequences=2, num_tokens=3, max_tokens=4)
ONE = LossNorm(1, 1, 1)


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        # on-policy (sampler = trainer): w = r = 1, per-token term -A: row 0 = [-1, -1], row 1 = [0.5, masked]
        ("grpo", (-1.0 + 0.5) / 2),  # sequence means, then mean over 2 sequences
        ("gspo", (-1.0 + 0.5) / 2),  # the sequence ratio is 1 too
        ("dapo", (-1.0 - 1.0 + 0.5) / 3),  # token sum over 3 masked tokens
        ("dr_grpo", (-1.0 - 1.0 + 0.5) / (2 * 4)),  # token sum over sequences x max_tokens
        ("cispo", (1.0 + 2.0 - 0.25) / 3),  # -w * A * logp with w = 1: [1, 2] and [-0.25], token mean
    ],
)
def test_variants_hand_computed(variant: str, expected: float) -> None:
    out = policy_loss(_inputs(LP, ADV, MASK), LossConfig(variant=variant), NORM)
    assert float(out.loss.detach()) == pytest.approx(expected)


def test_grpo_gradient_is_the_policy_gradient_on_policy() -> None:
    inp = _inputs(LP, ADV, MASK)
    policy_loss(inp, LossConfig(variant="grpo"), NORM).loss.backward()
    # d/dlogp of -A * exp(lp - prox) at ratio 1 is -A, over the sequence's tokens, over 2 sequences
    assert inp.logprobs.grad.flatten().tolist() == pytest.approx([-0.25, -0.25, 0.25, 0.0])


# A one-step-stale token: the update's starting policy finds it 1.5x likelier than the sampler did
# (log π_prox − log μ = log 1.5 < log cap). π_prox = sg(π_θ), one optimizer step per batch.
STALE = {"logprobs": [[-1.0]], "advantages": [1.0], "mask": [[1.0]], "sampler": [[-1.0 - math.log(1.5)]]}


@pytest.mark.parametrize(
    ("variant", "loss"),
    [
        ("grpo", -1.5),  # -w * r * A with r = 1, w = 1.5
        ("dr_grpo", -1.5),
        ("dapo", -1.5),
        ("gspo", -1.5),
        ("cispo", 1.5),  # -w * clip(r) * A * logp = -1.5 * 1 * 1 * (-1)
    ],
)
def test_a_stale_sample_keeps_its_gradient_weighted(variant: str, loss: float) -> None:
    inp = _inputs(**STALE, staleness=[1])
    out = policy_loss(inp, LossConfig(variant=variant), ONE)
    assert float(out.loss.detach()) == pytest.approx(loss)
    out.loss.backward()
    assert inp.logprobs.grad.item() == pytest.approx(-1.5)  # -w * A: the sample moves the policy
    assert out.stats["clipped_tokens"] == 0.0 and out.stats["is_masked_tokens"] == 0.0
    assert out.stats["is_ratio_sum/age_1"] == pytest.approx(1.5) and out.stats["tokens/age_1"] == 1.0


def test_a_stale_sample_moves_the_weights_where_the_clip_on_mu_froze_them() -> None:
    """A real parameter: a softmax policy over 3 tokens. The sampled token's ratio to μ is 1.5; the
    decoupled loss raises its probability, and the old objective (clip centred on μ, dapo's 1.28)
    gave it no gradient at all."""
    logits = torch.nn.Parameter(torch.tensor([0.5, 0.0, -0.5], dtype=torch.float64))
    token = 0

    def loss_of(prox_is_mu: bool) -> tuple[torch.Tensor, LossInputs]:
        lp = torch.log_softmax(logits, -1)[token].reshape(1, 1)  # [1, 1]
        mu = lp.detach() - math.log(1.5)
        inp = LossInputs(
            lp, mu, torch.tensor([1.0], dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64)
        )
        inp.staleness = torch.tensor([1])
        if prox_is_mu:
            inp.proximal_logprobs = mu
        return policy_loss(inp, LossConfig(variant="dapo"), ONE).loss, inp

    loss, _ = loss_of(prox_is_mu=False)
    loss.backward()
    assert logits.grad is not None
    p = torch.softmax(logits.detach(), -1)
    # d(-1.5 * log p_0)/dlogits = -1.5 * (onehot_0 - p)
    expected = -1.5 * (torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64) - p)
    assert torch.allclose(logits.grad, expected) and float(logits.grad.abs().sum()) > 0.1
    before = float(p[token])
    with torch.no_grad():
        logits -= 0.1 * logits.grad
    assert float(torch.softmax(logits.detach(), -1)[token]) > before
    logits.grad = None
    old, _ = loss_of(prox_is_mu=True)  # r = π_θ/μ = 1.5 > 1.28 with A > 0: clipped, flat
    old.backward()
    assert float(logits.grad.abs().sum()) == 0.0


def test_the_clip_is_centred_on_the_proximal_policy() -> None:
    # π_θ moved from π_prox within this update: r = e^0.5 = 1.6487 (w = 1: the sampler is π_prox)
    cfg = LossConfig(variant="dapo")  # 0.8 .. 1.28
    inp = _inputs([[0.0]], [1.0], [[1.0]], sampler=[[-0.5]], prox=[[-0.5]])
    out = policy_loss(inp, cfg, ONE)
    assert out.loss.item() == pytest.approx(-1.28)  # clipped to 1 + eps_high for A > 0...
    out.loss.backward()
    assert inp.logprobs.grad.item() == 0.0  # ...so the trust region stops this update here
    assert out.stats["clipped_tokens"] == 1.0
    neg = policy_loss(_inputs([[0.0]], [-1.0], [[1.0]], sampler=[[-0.5]], prox=[[-0.5]]), cfg, ONE)
    assert neg.loss.item() == pytest.approx(math.exp(0.5)) and neg.stats["clipped_tokens"] == 0.0
    low = policy_loss(_inputs([[-0.5]], [-1.0], [[1.0]], sampler=[[0.0]], prox=[[0.0]]), cfg, ONE)
    assert low.loss.item() == pytest.approx(0.8)  # r = e^-0.5 < 0.8 with A < 0: clipped to 0.8
    # the sampler's distance does not move the clip: π_prox/μ = 1.5 only scales the clipped term
    far = policy_loss(
        _inputs([[0.0]], [1.0], [[1.0]], sampler=[[-0.5 - math.log(1.5)]], prox=[[-0.5]]), cfg, ONE
    )
    assert far.loss.item() == pytest.approx(-1.28 * 1.5)


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_token_mode_truncates_the_weight_at_cap(advantage: float) -> None:
    # π_prox/μ = 3 > cap 2: w = 2 whatever the advantage's sign
    inp = _inputs([[0.0]], [advantage], [[1.0]], sampler=[[-math.log(3.0)]])
    out = policy_loss(inp, LossConfig(variant="dapo", mismatch_cap=2.0), ONE)
    assert out.loss.item() == pytest.approx(-2.0 * advantage)
    assert out.stats["is_masked_tokens"] == 1.0 and out.stats["is_ratio_max"] == pytest.approx(3.0)
    none = policy_loss(inp, LossConfig(variant="dapo", mismatch_mode="none"), ONE)
    assert none.loss.item() == pytest.approx(-advantage)  # w = 1
    assert none.stats["is_masked_tokens"] == 0.0


def test_sequence_mode_weighs_by_the_sequence_ratio_and_drops_outliers() -> None:
    # row 0: geometric-mean ratio 3 > cap 2, dropped; row 1: log ratios 0.2 and 0.6 -> w = e^0.4 for
    # both tokens; row 2: ratio 1
    inp = _inputs(
        [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
        [1.0, 1.0, 1.0],
        [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]],
        sampler=[[-math.log(3.0)] * 2, [-0.2, -0.6], [0.0, 0.0]],
    )
    cfg = LossConfig(variant="dapo", mismatch_mode="sequence", mismatch_cap=2.0)
    out = policy_loss(inp, cfg, LossNorm(3, 6, 2))
    assert out.loss.item() == pytest.approx(-(2 * math.exp(0.4) + 2.0) / 6)
    assert out.stats["is_masked_tokens"] == 2.0
    out.loss.backward()
    assert inp.logprobs.grad.flatten().tolist() == pytest.approx(
        [0, 0] + [-math.exp(0.4) / 6] * 2 + [-1 / 6] * 2
    )


def test_gspo_clips_the_sequence_ratio_to_the_proximal_policy() -> None:
    # token log-ratios to π_prox 0.1 and 0.3: sequence ratio exp(0.2) = 1.2214 > 1.2 -> clipped for A = 1
    cfg = LossConfig(variant="gspo", eps_low=0.2, eps_high=0.2)
    inp = _inputs([[0.1, 0.3]], [1.0], [[1.0, 1.0]], sampler=[[0.0, 0.0]], prox=[[0.0, 0.0]])
    out = policy_loss(inp, cfg, LossNorm(1, 2, 2))
    assert out.loss.item() == pytest.approx(-1.2) and out.stats["clipped_tokens"] == 2.0
    inp = _inputs([[0.1, 0.3]], [-1.0], [[1.0, 1.0]], sampler=[[0.0, 0.0]], prox=[[0.0, 0.0]])
    out = policy_loss(inp, LossConfig(variant="gspo"), LossNorm(1, 2, 2))
    assert out.loss.item() == pytest.approx(math.exp(0.2))  # A < 0: the unclipped exp(0.2), each token
    out.loss.backward()
    # loss = exp(mean_t lp_t - prox): each token's share of the mean, d/dlp_t = exp(0.2) / 2
    assert inp.logprobs.grad.flatten().tolist() == pytest.approx([math.exp(0.2) / 2] * 2)
    # on π_prox = π_θ with token weights 1.5 and 1: the gradient is the mean weight on every token
    stale = _inputs([[0.0, 0.0]], [1.0], [[1.0, 1.0]], sampler=[[-math.log(1.5), 0.0]])
    policy_loss(stale, LossConfig(variant="gspo"), LossNorm(1, 2, 2)).loss.backward()
    assert stale.logprobs.grad.flatten().tolist() == pytest.approx([-1.25 / 2] * 2)


def test_cispo_clips_the_ratio_to_the_proximal_policy_as_a_weight() -> None:
    # r = π_θ/π_prox = e^2 = 7.39, clipped to 1 + 4 = 5 (ART's defaults); the gradient still flows
    cfg = LossConfig(variant="cispo")
    inp = _inputs([[-1.0]], [2.0], [[1.0]], sampler=[[-3.0]], prox=[[-3.0]])
    out = policy_loss(inp, cfg, ONE)
    assert out.loss.item() == pytest.approx(-5.0 * 2.0 * -1.0)  # -clip(r) * A * logp
    out.loss.backward()
    assert inp.logprobs.grad.item() == pytest.approx(-5.0 * 2.0)
    assert out.stats["clipped_tokens"] == 1.0
    weighted = _inputs([[-1.0]], [2.0], [[1.0]], sampler=[[-3.0 - math.log(1.5)]], prox=[[-3.0]])
    assert policy_loss(weighted, cfg, ONE).loss.item() == pytest.approx(1.5 * 10.0)  # times w = 1.5


def test_mismatch_kl_is_the_current_adapters_and_stale_kl_the_older_ones() -> None:
    # row 0 sampled by this adapter (log π/μ = 0.1), row 1 one version ago (log π/μ = 0.5)
    inp = _inputs(
        [[0.0, 0.0], [0.0, 0.0]], [1.0, 1.0], [[1.0, 1.0], [1.0, 0.0]], sampler=[[-0.1] * 2, [-0.5] * 2]
    )
    inp.staleness = torch.tensor([0, 1])
    out = policy_loss(inp, LossConfig(), LossNorm(2, 3, 2))

    def k3(d: float) -> float:
        return math.exp(d) - d - 1.0

    assert out.stats["mismatch_kl_sum"] == pytest.approx(2 * k3(0.1)) and out.stats["fresh_tokens"] == 2.0
    assert out.stats["stale_kl_sum"] == pytest.approx(k3(0.5))


def test_k3_kl_hand_computed() -> None:
    # ref - logp = log 2: k3 = 2 - log 2 - 1
    inp = _inputs([[0.0]], [0.0], [[1.0]], ref=[[math.log(2.0)]])
    out = policy_loss(inp, LossConfig(variant="dapo", kl_coef=0.5), ONE)
    k3 = 2.0 - math.log(2.0) - 1.0
    assert out.loss.item() == pytest.approx(0.5 * k3)
    assert out.stats["kl_sum"] == pytest.approx(k3)
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(_inputs([[0.0]], [0.0], [[1.0]]), LossConfig(kl_coef=0.1), ONE)


def test_clip_ranges_default_per_variant() -> None:
    assert clip_range(LossConfig("grpo")) == pytest.approx((0.8, 1.2))
    assert clip_range(LossConfig("dapo")) == pytest.approx((0.8, 1.28))
    assert clip_range(LossConfig("gspo")) == pytest.approx((1 - 3e-4, 1 + 4e-4))
    assert clip_range(LossConfig("cispo")) == pytest.approx((0.0, 5.0))
    assert clip_range(LossConfig("grpo", eps_low=0.1)) == pytest.approx((0.9, 1.1))  # high follows low
    assert clip_range(LossConfig("dapo", eps_low=0.1)) == pytest.approx((0.9, 1.28))


def test_every_variant_is_a_config_choice_and_bad_names_say_so() -> None:
    """A new variant is a function and a VARIANTS entry; its name goes in AlgorithmConfig.variant."""
    assert set(get_args(AlgorithmConfig.model_fields["variant"].annotation)) == set(VARIANTS)
    with pytest.raises(ValueError, match="algorithm.variant: unknown loss variant 'ppo'"):
        policy_loss(_inputs(LP, ADV, MASK), LossConfig(variant="ppo"), NORM)
    with pytest.raises(ValueError, match="algorithm.mismatch.mode"):
        policy_loss(_inputs(LP, ADV, MASK), LossConfig(mismatch_mode="tokens"), NORM)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_micro_batches_sum_to_full_batch(variant: str) -> None:
    g = torch.Generator().manual_seed(0)
    lp = (-torch.rand(6, 5, generator=g, dtype=torch.float64)).tolist()
    mu = (-torch.rand(6, 5, generator=g, dtype=torch.float64)).tolist()
    adv = torch.randn(6, generator=g, dtype=torch.float64).tolist()
    mask = (torch.rand(6, 5, generator=g) > 0.3).double().tolist()
    norm = LossNorm(6, int(sum(map(sum, mask))), 5)
    cfg = LossConfig(variant=variant)
    full = policy_loss(_inputs(lp, adv, mask, sampler=mu), cfg, norm).loss.item()
    parts = sum(
        float(
            policy_loss(
                _inputs(lp[i : i + 2], adv[i : i + 2], mask[i : i + 2], sampler=mu[i : i + 2]), cfg, norm
            ).loss
        )
        for i in (0, 2, 4)
    )
    assert parts == pytest.approx(full)
