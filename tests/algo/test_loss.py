"""The policy loss against hand-computed numbers: the ratio is taken against the sampling policy (its
logprobs are the 'inference' ones), so clipping acts on stale samples; gspo and cispo; mismatch
corrections; k3 KL; micro-batches that add up to the full batch."""

import math

import pytest
import torch

from rltrain.algo.loss import LossConfig, LossInputs, LossNorm, policy_loss


def _inputs(logprobs, advantages, mask, sampler=None, ref=None, staleness=None) -> LossInputs:
    lp = torch.tensor(logprobs, dtype=torch.float64, requires_grad=True)
    mu = torch.tensor(sampler, dtype=torch.float64) if sampler is not None else lp.detach().clone()
    return LossInputs(
        logprobs=lp,
        inference_logprobs=mu,
        advantages=torch.tensor(advantages, dtype=torch.float64),
        mask=torch.tensor(mask, dtype=torch.float64),
        ref_logprobs=torch.tensor(ref, dtype=torch.float64) if ref is not None else None,
        staleness=torch.tensor(staleness) if staleness is not None else None,
    )


LP = [[-1.0, -2.0], [-0.5, -3.0]]
MASK = [[1.0, 1.0], [1.0, 0.0]]
ADV = [1.0, -0.5]
NORM = LossNorm(num_sequences=2, num_tokens=3, max_tokens=4)
ONE = LossNorm(1, 1, 1)


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        # on-policy (sampler = trainer): ratio 1, per-token term -A: row 0 = [-1, -1], row 1 = [0.5, masked]
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
    # d/dlogp of -A * exp(lp - mu) at ratio 1 is -A, over the sequence's tokens, over 2 sequences
    assert inp.logprobs.grad.flatten().tolist() == pytest.approx([-0.25, -0.25, 0.25, 0.0])


def test_a_stale_sample_is_clipped_against_its_sampler() -> None:
    # the trainer moved since the sample was drawn: ratio e^0.5 = 1.6487 vs the sampler's logprob
    cfg = LossConfig(variant="dapo", eps_low=0.2, eps_high=0.28)
    stale = _inputs([[0.0]], [1.0], [[1.0]], sampler=[[-0.5]], staleness=[1])
    out = policy_loss(stale, cfg, ONE)
    assert float(out.loss) == pytest.approx(-1.28)  # clipped to 1 + eps_high for A > 0...
    out.loss.backward()
    assert stale.logprobs.grad.item() == 0.0  # ...so the clip takes its gradient away
    assert out.stats["clipped_tokens"] == 1.0
    assert (
        out.stats["is_ratio_sum/age_1"] == pytest.approx(math.exp(0.5)) and out.stats["tokens/age_1"] == 1.0
    )
    # a negative advantage keeps the pessimistic unclipped term, up to the mismatch cap (dual clip)
    neg = policy_loss(_inputs([[0.0]], [-1.0], [[1.0]], sampler=[[-0.5]]), cfg, ONE)
    assert float(neg.loss) == pytest.approx(math.exp(0.5)) and neg.stats["clipped_tokens"] == 0.0
    # ratio e^-0.5 = 0.6065 < 1 - 0.2 with a negative advantage: clipped to 0.8
    low = policy_loss(_inputs([[-0.5]], [-1.0], [[1.0]], sampler=[[0.0]]), cfg, ONE)
    assert float(low.loss) == pytest.approx(0.8)


def test_token_mismatch_caps_negative_advantages() -> None:
    # ratio 3 with A = -1: PPO alone would weigh it 3; the dual clip caps it at mismatch_cap = 2
    inp = _inputs([[0.0]], [-1.0], [[1.0]], sampler=[[-math.log(3.0)]])
    out = policy_loss(inp, LossConfig(variant="dapo", mismatch_cap=2.0), ONE)
    assert float(out.loss) == pytest.approx(2.0)
    assert out.stats["is_masked_tokens"] == 1.0 and out.stats["is_ratio_max"] == pytest.approx(3.0)
    assert out.stats["mismatch_kl_sum"] == pytest.approx(3.0 - 1.0 - math.log(3.0))  # k3 at r = 3
    none = policy_loss(inp, LossConfig(variant="dapo", mismatch_mode="none"), ONE)
    assert float(none.loss) == pytest.approx(3.0)


def test_sequence_mismatch_masks_whole_sequences() -> None:
    # row 0 geometric-mean ratio 3 > cap 2: dropped; row 1 ratio 1: kept (-A per token)
    inp = _inputs(
        [[0.0, 0.0], [0.0, 0.0]],
        [1.0, 1.0],
        [[1.0, 1.0], [1.0, 1.0]],
        sampler=[[-math.log(3.0)] * 2, [0.0, 0.0]],
    )
    cfg = LossConfig(variant="dapo", mismatch_mode="sequence", mismatch_cap=2.0, eps_high=10.0)
    out = policy_loss(inp, cfg, LossNorm(2, 4, 2))
    assert float(out.loss) == pytest.approx(-2.0 / 4)
    assert out.stats["is_masked_tokens"] == 2.0


def test_gspo_uses_the_sequence_ratio() -> None:
    # token log-ratios 0.1 and 0.3: sequence ratio exp(0.2) = 1.2214 > 1 + 0.2 -> clipped at 1.2 for A = 1
    inp = _inputs([[0.1, 0.3]], [1.0], [[1.0, 1.0]], sampler=[[0.0, 0.0]])
    out = policy_loss(inp, LossConfig(variant="gspo", eps_low=0.2, eps_high=0.2), LossNorm(1, 2, 2))
    assert float(out.loss) == pytest.approx(-1.2) and out.stats["clipped_tokens"] == 2.0
    inp = _inputs([[0.1, 0.3]], [-1.0], [[1.0, 1.0]], sampler=[[0.0, 0.0]])
    out = policy_loss(inp, LossConfig(variant="gspo", mismatch_mode="none"), LossNorm(1, 2, 2))
    assert float(out.loss) == pytest.approx(math.exp(0.2))  # A < 0: the unclipped exp(0.2), each token
    out.loss.backward()
    # loss = exp(mean_t lp_t - mu): each token's share of the mean, d/dlp_t = exp(0.2) / 2
    assert inp.logprobs.grad.flatten().tolist() == pytest.approx([math.exp(0.2) / 2] * 2)


def test_cispo_weight_is_clipped_and_never_stops_the_gradient() -> None:
    # ratio e^2 = 7.39 clipped to 1 + 4 = 5 (ART's defaults); the gradient still flows through log pi
    cfg = LossConfig(variant="cispo", eps_low=1.0, eps_high=4.0)
    inp = _inputs([[-1.0]], [2.0], [[1.0]], sampler=[[-3.0]])
    out = policy_loss(inp, cfg, ONE)
    assert float(out.loss) == pytest.approx(-5.0 * 2.0 * -1.0)  # -w * A * logp
    out.loss.backward()
    assert inp.logprobs.grad.item() == pytest.approx(-5.0 * 2.0)
    assert out.stats["clipped_tokens"] == 1.0


def test_k3_kl_hand_computed() -> None:
    # ref - logp = log 2: k3 = 2 - log 2 - 1
    inp = _inputs([[0.0]], [0.0], [[1.0]], ref=[[math.log(2.0)]])
    out = policy_loss(inp, LossConfig(variant="dapo", kl_coef=0.5), ONE)
    k3 = 2.0 - math.log(2.0) - 1.0
    assert float(out.loss) == pytest.approx(0.5 * k3)
    assert out.stats["kl_sum"] == pytest.approx(k3)
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(_inputs([[0.0]], [0.0], [[1.0]]), LossConfig(kl_coef=0.1), ONE)


@pytest.mark.parametrize("variant", ["grpo", "dapo", "dr_grpo", "gspo", "cispo"])
def test_micro_batches_sum_to_full_batch(variant: str) -> None:
    g = torch.Generator().manual_seed(0)
    lp = (-torch.rand(6, 5, generator=g, dtype=torch.float64)).tolist()
    mu = (-torch.rand(6, 5, generator=g, dtype=torch.float64)).tolist()
    adv = torch.randn(6, generator=g, dtype=torch.float64).tolist()
    mask = (torch.rand(6, 5, generator=g) > 0.3).double().tolist()
    norm = LossNorm(6, int(sum(map(sum, mask))), 5)
    cfg = LossConfig(variant=variant)
    full = float(policy_loss(_inputs(lp, adv, mask, sampler=mu), cfg, norm).loss)
    parts = sum(
        float(
            policy_loss(
                _inputs(lp[i : i + 2], adv[i : i + 2], mask[i : i + 2], sampler=mu[i : i + 2]), cfg, norm
            ).loss
        )
        for i in (0, 2, 4)
    )
    assert parts == pytest.approx(full)
