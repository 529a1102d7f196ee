"""The rollout statistics the guards read: repeated n-grams and groups without a learning signal."""

from __future__ import annotations

import pytest

from rltrain.rollout.signals import flat_group_share, repeated_ngram_share, repetition


def test_repeated_ngram_share_by_hand() -> None:
    assert repeated_ngram_share("a b c d e".split()) == 0.0  # 3 trigrams, all different
    assert repeated_ngram_share("cat cat cat cat cat".split()) == pytest.approx(2 / 3)  # 3 trigrams, 1 kind
    assert repeated_ngram_share("a b c a b c a b c".split()) == pytest.approx(4 / 7)  # 7 trigrams, 3 kinds
    assert repeated_ngram_share("a a a".split()) == 0.0  # one trigram: too short to repeat
    assert repeated_ngram_share([7, 7, 7, 7], n=1) == pytest.approx(3 / 4)  # token ids work as well


def test_repetition_is_the_mean_over_completions() -> None:
    loop = " 665 665 665 665 665 665 665 665"  # what the demo ends up writing
    assert repetition([loop]) == pytest.approx(5 / 6)
    assert repetition([loop, "write the total of these numbers now"]) == pytest.approx(5 / 12)
    assert repetition([]) == 0.0


def test_flat_group_share_counts_groups_per_environment() -> None:
    records = [
        {"env": "a", "group": 0, "reward": 1.0},
        {"env": "a", "group": 0, "reward": 1.0},
        {"env": "a", "group": 1, "reward": 0.0},
        {"env": "a", "group": 1, "reward": 0.5},
        {"env": "b", "group": 0, "reward": 0.2},  # the same group number in another environment
        {"env": "b", "group": 0, "reward": 0.2},
    ]
    assert flat_group_share(records) == pytest.approx(2 / 3)
    assert flat_group_share([]) == 0.0
