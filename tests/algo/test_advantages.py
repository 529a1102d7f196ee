import math

import pytest

from rltrain.algo.advantages import group_advantages, is_zero_advantage


def test_mean_baseline_and_std_scaling_hand_computed() -> None:
    # rewards 1, 0, 0, 1: mean 0.5, population std 0.5 -> advantages +-1
    adv = group_advantages([1.0, 0.0, 0.0, 1.0], scale=True)
    assert adv == pytest.approx([1.0, -1.0, -1.0, 1.0], abs=1e-5)


def test_unscaled_is_reward_minus_mean() -> None:
    assert group_advantages([3.0, 1.0, 2.0], scale=False) == pytest.approx([1.0, -1.0, 0.0])


def test_uneven_group() -> None:
    # rewards 2, 0, 0, 0: mean .5, std sqrt((2.25 + 3 * .25) / 4) = sqrt(.75)
    std = math.sqrt(0.75)
    adv = group_advantages([2.0, 0.0, 0.0, 0.0])
    assert adv == pytest.approx([1.5 / std, -0.5 / std, -0.5 / std, -0.5 / std], rel=1e-5)


def test_equal_rewards_give_zero_not_nan() -> None:
    adv = group_advantages([0.7, 0.7, 0.7])
    assert adv == [0.0, 0.0, 0.0]
    assert is_zero_advantage(adv)
    assert not is_zero_advantage(group_advantages([1.0, 0.0]))
    assert group_advantages([]) == []
