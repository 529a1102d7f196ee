"""Honest evals: the intervals cover the truth as often as they claim, pass@k is unbiased, and the paired
comparison neither finds differences that are not there nor misses one that is."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from rltrain.evalstats import (
    avg_at_k,
    compare,
    comparison_json,
    comparison_table,
    eval_metrics,
    mean_interval,
    pass_at_k,
    pass_at_k_unbiased,
    sign_flip_p,
    wilson,
)


def test_wilson_matches_published_values() -> None:
    # Newcombe (1998), Table I / any textbook: 5 of 10 -> 0.2366..0.7634; 0 of 10 -> 0..0.2775
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(10, 10)[1] == 1.0 and wilson(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)


def test_a_fair_coin_is_covered_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    flips = (rng.random((2000, 100)) < 0.5).astype(float)  # 2000 evals of 100 prompts, one 0/1 reward each
    covered = [(e.lo <= 0.5 <= e.hi) for e in (mean_interval(f.tolist()) for f in flips)]
    assert 0.93 <= np.mean(covered) <= 0.97, np.mean(covered)


def test_clustered_rewards_are_covered_by_the_bootstrap_over_prompts() -> None:
    """k = 4 completions of prompts whose difficulty varies a lot: the completions of a prompt agree, so
    an interval over the 128 completions as if independent would be ~1.6x too narrow."""
    rng = np.random.default_rng(1)
    covered, pooled = [], []
    for seed in range(200):
        p = rng.beta(0.5, 0.5, size=32)  # [prompts]: the true chance each prompt passes, mean 0.5
        rewards = (rng.random((32, 4)) < p[:, None]).astype(float)  # [prompts, k]
        est = avg_at_k(rewards.tolist(), seed=seed)
        covered.append(est.lo <= 0.5 <= est.hi)
        lo, hi = wilson(int(rewards.sum()), rewards.size)
        pooled.append(lo <= 0.5 <= hi)
    assert 0.9 <= np.mean(covered) <= 0.985, np.mean(covered)
    assert np.mean(pooled) < 0.85  # what ignoring the clustering would have claimed


def test_pass_at_k_is_the_chance_that_k_draws_include_a_pass() -> None:
    for n, c, k in [(5, 2, 2), (10, 3, 4), (4, 0, 2), (4, 4, 1), (6, 1, 6), (20, 1, 1)]:
        draws = list(itertools.combinations(range(n), k))
        brute = np.mean([any(i < c for i in draw) for draw in draws])  # completions 0..c-1 pass
        assert pass_at_k_unbiased(np.array([n]), np.array([c]), k)[0] == pytest.approx(brute)
    with pytest.raises(ValueError, match="pass@4 needs at least 4 completions"):
        pass_at_k([[1.0, 0.0]], 4)


def test_pass_at_k_is_unbiased_where_the_plug_in_estimate_is_not() -> None:
    """pass@2 from 8 samples per prompt: the mean over prompts hits the truth 1 - (1-p)^2."""
    rng = np.random.default_rng(2)
    rewards = (rng.random((4000, 8)) < 0.2).astype(float)  # [prompts, n]
    est = pass_at_k(rewards.tolist(), 2)
    assert est.lo <= 1 - 0.8**2 <= est.hi
    assert est.value == pytest.approx(0.36, abs=0.01)


def test_eval_metrics_name_each_interval_after_its_metric() -> None:
    out = eval_metrics("eval/digits", [[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], k=2)
    assert out["eval/digits/avg@2"] == pytest.approx(0.5)
    assert out["eval/digits/pass@2"] == pytest.approx(2 / 3)
    assert (out["eval/digits/pass@2/lo"], out["eval/digits/pass@2/hi"]) == pytest.approx(wilson(2, 3))
    assert out["eval/digits/avg@2/lo"] <= 0.5 <= out["eval/digits/avg@2/hi"]
    assert set(out) == {f"eval/digits/{m}@2{s}" for m in ("avg", "pass") for s in ("", "/lo", "/hi")}


def test_sign_flip_p_is_exact_for_few_prompts() -> None:
    # five prompts all +1: only "all +" and "all -" of the 32 sign patterns reach |mean| 1
    assert sign_flip_p(np.ones(5)) == pytest.approx(2 / 32)
    assert sign_flip_p(np.zeros(5)) == 1.0  # the same completions: nothing to tell apart


def _null_p_values(binary: bool) -> np.ndarray:
    """p-values of 400 comparisons of a policy with itself: 40 prompts, 4 completions, sampled twice."""
    rng = np.random.default_rng(3)
    ps = []
    for seed in range(400):
        p = rng.beta(2, 2, size=40)  # [prompts]: the two draws differ only by sampling
        noise = rng.random((2, 40, 4))  # [draw, prompt, completion]
        draws = (noise < p[:, None]).astype(float) if binary else np.clip(p[:, None] + noise - 0.5, 0, 1)
        a, b = draws.mean(axis=2)  # [prompts] each
        ps.append(sign_flip_p(a - b, seed=seed))
    return np.sort(ps)


def test_identical_policies_give_uniform_p_values() -> None:
    ps = _null_p_values(binary=False)
    ks = np.max(np.abs(ps - np.arange(1, 401) / 400))  # Kolmogorov-Smirnov distance to uniform
    assert ks < 0.07, ks  # 1.36 / sqrt(400) = 0.068 is the 5% critical value
    # 0/1 rewards: the difference is exactly 0 now and then (p = 1), so p is uniform up to those atoms
    # and never below it: P(p <= alpha) stays at most alpha
    ps = _null_p_values(binary=True)
    for alpha in (0.05, 0.1, 0.2, 0.5):
        assert alpha - 0.1 <= np.mean(ps <= alpha) <= alpha + 0.03, (alpha, np.mean(ps <= alpha))


def test_a_real_difference_is_found_with_its_interval() -> None:
    rng = np.random.default_rng(4)
    p = rng.beta(2, 2, size=100) * 0.6  # [prompts]
    a = (rng.random((100, 4)) < p[:, None] + 0.2).astype(float).tolist()  # a passes 0.2 more often
    b = (rng.random((100, 4)) < p[:, None]).astype(float).tolist()
    c = compare(a, b)
    assert c.p_value < 0.01
    assert 0.0 < c.diff.lo < 0.2 < c.diff.hi
    assert c.diff.value == pytest.approx(c.a.value - c.b.value)
    same = compare(b, b)
    assert same.p_value == 1.0 and same.diff.value == 0.0
    with pytest.raises(ValueError, match="same prompts"):
        compare(a, b[:-1])


def test_comparison_as_table_and_json() -> None:
    c = compare([[1.0], [1.0], [0.0]], [[0.0], [1.0], [0.0]])
    table = comparison_table({"digits": c}, ("trained", "base"))
    head, line = table.splitlines()
    assert head.split()[:4] == ["environment", "n", "trained", "base"]
    assert line.split()[:3] == ["digits", "3", "0.667"] and line.endswith(f"{c.p_value:6.4f}")
    long = comparison_table({"digits": c}, ("/tmp/runs/demo0/checkpoints/step_30", "base"))
    assert long.split()[2] == "…/checkpoints/step_30"  # whole path components, not "emo0/checkpoints/…"
    data = json.loads(comparison_json({"digits": c}, ("trained", "base")))
    assert data["a"] == "trained" and data["environments"]["digits"]["diff"]["value"] == pytest.approx(1 / 3)
    assert data["environments"]["digits"]["p_value"] == pytest.approx(c.p_value)
