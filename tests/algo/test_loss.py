import math

import pytest
import torch

from rltrain.algo.loss import LossConfig, LossInputs, LossNorm, policy_loss


def _inputs(logprobs, advantages, mask, old=None, inference=None, ref=None) -> LossInputs:
    lp = torch.tensor(logprobs, dtype=torch.float64, requires_grad=True)
    old_t = torch.tensor(old, dtype=torch.float64) if old is not None else lp.detach().clone()
    inf_t = torch.tensor(inference, dtype=torch.float64) if inference is not None else old_t.clone()
    return LossInputs(
        logprobs=lp,
        old_logprobs=old_t,
        inference_logprobs=inf_t,
        advantages=torch.tensor(advantages, dtype=torch.float64),
        mask=torch.tensor(mask, dtype=torch.float64),
        ref_logprobs=torch.tensor(ref, dtype=torch.float64) if ref is not None else None,
    )


LP = [[-1.0, -2.0], [-0.5, -3.0]]
MASK = [[1.0, 1.0], [1.0, 0.0]]
ADV = [1.0, -0.5]
NORM = LossNorm(num_sequences=2, num_tokens=3, max_tokens=4)


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        # per-token pg = -A at ratio 1: row 0 = [-1, -1], row 1 = [0.5, masked]
        ("grpo", (-1.0 + 0.5) / 2),  # sequence means, then mean over 2 sequences
        ("dapo", (-1.0 - 1.0 + 0.5) / 3),  # token sum over 3 masked tokens
        ("dr_grpo", (-1.0 - 1.0 + 0.5) / (2 * 4)),  # token sum over sequences x max_tokens
    ],
)
def test_variants_hand_computed(variant: str, expected: float) -> None:
    out = policy_loss(_inputs(LP, ADV, MASK), LossConfig(variant=variant), NORM)
    assert float(out.loss) == pytest.approx(expected)


def test_grpo_gradient_hand_computed() -> None:
    inp = _inputs(LP, ADV, MASK)
    policy_loss(inp, LossConfig(variant="grpo"), NORM).loss.backward()
    # d/dlogp of -A * exp(lp - old) at ratio 1 is -A, over tokens in the sequence, over 2 sequences
    assert inp.logprobs.grad.flatten().tolist() == pytest.approx([-0.25, -0.25, 0.25, 0.0])


def test_clip_higher_and_lower() -> None:
    # ratio e^0.5 = 1.6487 is clipped to 1 + eps_high for a positive advantage...
    cfg = LossConfig(variant="dapo", eps_low=0.2, eps_high=0.28)
    one = LossNorm(1, 1, 1)
    out = policy_loss(_inputs([[0.0]], [1.0], [[1.0]], old=[[-0.5]]), cfg, one)
    assert float(out.loss) == pytest.approx(-1.28)
    assert out.stats["clipped_tokens"] == 1.0
    # ...but not for a negative one: max(1.6487, 1.28) keeps the unclipped (pessimistic) term
    out = policy_loss(_inputs([[0.0]], [-1.0], [[1.0]], old=[[-0.5]]), cfg, one)
    assert float(out.loss) == pytest.approx(math.exp(0.5))
    assert out.stats["clipped_tokens"] == 0.0
    # ratio e^-0.5 = 0.6065 < 1 - 0.2 with a negative advantage: clipped to 0.8
    out = policy_loss(_inputs([[-0.5]], [-1.0], [[1.0]], old=[[0.0]]), cfg, one)
    assert float(out.loss) == pytest.approx(0.8)


def test_token_mismatch_weights_are_truncated() -> None:
    # trainer/inference ratio 3 is capped at 2, so the token term -A * 1 becomes -2
    inp = _inputs([[0.0]], [1.0], [[1.0]], inference=[[-math.log(3.0)]])
    out = policy_loss(inp, LossConfig(variant="dapo", mismatch_cap=2.0), LossNorm(1, 1, 1))
    assert float(out.loss) == pytest.approx(-2.0)
    assert out.stats["is_masked_tokens"] == 1.0
    assert out.stats["is_ratio_max"] == pytest.approx(3.0)
    # k3 of the mismatch: r - 1 - log r with r = 3
    assert out.stats["mismatch_kl_sum"] == pytest.approx(3.0 - 1.0 - math.log(3.0))
    none = policy_loss(inp, LossConfig(variant="dapo", mismatch_mode="none"), LossNorm(1, 1, 1))
    assert float(none.loss) == pytest.approx(-1.0)


def test_sequence_mismatch_masks_whole_sequences() -> None:
    # row 0 geometric-mean ratio 3 > cap 2: dropped; row 1 ratio 1: kept
    inp = _inputs(
        [[0.0, 0.0], [0.0, 0.0]],
        [1.0, 1.0],
        [[1.0, 1.0], [1.0, 1.0]],
        inference=[[-math.log(3.0)] * 2, [0.0, 0.0]],
    )
    out = policy_loss(
        inp, LossConfig(variant="dapo", mismatch_mode="sequence", mismatch_cap=2.0), LossNorm(2, 4, 2)
    )
    assert float(out.loss) == pytest.approx(-2.0 / 4)
    assert out.stats["is_masked_tokens"] == 2.0


def test_k3_kl_hand_computed() -> None:
    # ref - logp = log 2: k3 = 2 - log 2 - 1
    inp = _inputs([[0.0]], [0.0], [[1.0]], ref=[[math.log(2.0)]])
    out = policy_loss(inp, LossConfig(variant="dapo", kl_coef=0.5), LossNorm(1, 1, 1))
    k3 = 2.0 - math.log(2.0) - 1.0
    assert float(out.loss) == pytest.approx(0.5 * k3)
    assert out.stats["kl_sum"] == pytest.approx(k3)
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(_inputs([[0.0]], [0.0], [[1.0]]), LossConfig(kl_coef=0.1), LossNorm(1, 1, 1))


@pytest.mark.parametrize("variant", ["grpo", "dapo", "dr_grpo"])
def test_micro_batches_sum_to_full_batch(variant: str) -> None:
    g = torch.Generator().manual_seed(0)
    lp = (-torch.rand(6, 5, generator=g, dtype=torch.float64)).tolist()
    old = (-torch.rand(6, 5, generator=g, dtype=torch.float64)).tolist()
    adv = torch.randn(6, generator=g, dtype=torch.float64).tolist()
    mask = (torch.rand(6, 5, generator=g) > 0.3).double().tolist()
    norm = LossNorm(6, int(sum(map(sum, mask))), 5)
    cfg = LossConfig(variant=variant)
    full = float(policy_loss(_inputs(lp, adv, mask, old=old), cfg, norm).loss)
    parts = sum(
        float(
            policy_loss(
                _inputs(lp[i : i + 2], adv[i : i + 2], mask[i : i + 2], old=old[i : i + 2]), cfg, norm
            ).loss
        )
        for i in (0, 2, 4)
    )
    assert parts == pytest.approx(full)
