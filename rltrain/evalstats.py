"""Evals that say how sure they are: avg@k and pass@k with 95% intervals, and a paired comparison of two
policies on the same rows with the same sampling seeds.

Everything takes per-prompt reward lists (`rewards[i]` = the k rewards of prompt i), as
rltrain/evaluate.py scores them. The prompt is the unit of resampling: a prompt's k completions are
not independent of each other (an easy prompt passes k times), so the intervals bootstrap over
prompts, except for one 0/1 reward per prompt, where Wilson's score interval is exact enough and
needs no resampling. numpy and the standard library only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

LEVEL = 0.95
ROUNDS = 2000  # bootstrap and permutation rounds: a bound's Monte Carlo error is ~2% of the interval's width
PASS_THRESHOLD = 0.999  # rewards are usually 0..1 correctness; "pass" means full marks
Rewards = Sequence[Sequence[float]]


@dataclass(frozen=True)
class Estimate:
    value: float
    lo: float  # the interval's bounds at `level`
    hi: float
    n: int  # prompts


@dataclass(frozen=True)
class Comparison:
    """a - b on the same prompts: the mean paired difference, its interval and a two-sided p-value."""

    a: Estimate
    b: Estimate
    diff: Estimate
    p_value: float
    level: float = LEVEL


def wilson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson's score interval for a binomial proportion (coverage close to nominal even near 0 or 1)."""
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_means(values: np.ndarray, rounds: int = ROUNDS, seed: int = 0) -> np.ndarray:
    """Means of `rounds` resamples (with replacement) of `values` along its first axis."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(rounds, len(values)))  # [rounds, n]
    return np.asarray(values[idx].mean(axis=1))  # [rounds] (or [rounds, ...] for rows of values)


def mean_interval(values: Sequence[float], level: float = LEVEL, seed: int = 0) -> Estimate:
    """The mean of per-prompt values with its interval: Wilson's when every value is 0 or 1, else the
    percentile bootstrap over prompts."""
    v = np.asarray(values, dtype=np.float64)  # [n]
    if len(v) == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if np.isin(v, (0.0, 1.0)).all():
        lo, hi = wilson(int(v.sum()), len(v), level)
        return Estimate(mean, lo, hi, len(v))
    means = bootstrap_means(v, seed=seed)
    tail = (1 - level) / 2
    return Estimate(mean, float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail)), len(v))


def avg_at_k(rewards: Rewards, level: float = LEVEL, seed: int = 0) -> Estimate:
    """avg@k: the mean reward over every completion, with its interval over prompts."""
    return mean_interval([float(np.mean(r)) for r in rewards if len(r)], level, seed)


def pass_at_k_unbiased(n: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    """Chen et al. 2021 (the HumanEval paper): 1 - C(n-c, k) / C(n, k), the chance that k of a
    prompt's n completions, drawn without replacement, include a pass; as a stable product."""
    n, c = np.asarray(n, dtype=np.int64), np.asarray(c, dtype=np.int64)
    if (k > n).any():
        raise ValueError(f"pass@{k} needs at least {k} completions per prompt (got {int(n.min())})")
    out = np.ones(len(n))
    for j, (nj, cj) in enumerate(zip(n, c, strict=True)):
        if nj - cj >= k:  # else every draw of k includes a pass
            out[j] = 1.0 - np.prod(1.0 - k / np.arange(nj - cj + 1, nj + 1))
    return out


def pass_at_k(
    rewards: Rewards, k: int, threshold: float = PASS_THRESHOLD, level: float = LEVEL, seed: int = 0
) -> Estimate:
    """pass@k (unbiased, from each prompt's n >= k completions) with its interval over prompts."""
    kept = [r for r in rewards if len(r)]
    n = np.array([len(r) for r in kept])
    c = np.array([sum(x >= threshold for x in r) for r in kept])
    return mean_interval(pass_at_k_unbiased(n, c, k).tolist(), level, seed)


def sign_flip_p(d: np.ndarray, rounds: int = ROUNDS, seed: int = 0) -> float:
    """Two-sided p-value of the paired permutation test: under "no difference" each prompt's difference
    is as likely negated. Exact (every sign pattern) for up to 12 prompts, else Monte Carlo."""
    observed = abs(float(d.mean()))
    n = len(d)
    if n <= 12:
        patterns = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1  # [2^n, n] of +-1
        flipped = np.abs(patterns @ d / n)
        return float(np.mean(flipped >= observed - 1e-12))
    rng = np.random.default_rng(seed)
    signs = rng.integers(0, 2, size=(rounds, n), dtype=np.int8) * 2.0 - 1.0  # [rounds, n] of +-1
    flipped = np.abs(signs @ d / n)  # [rounds]
    return float((1 + np.sum(flipped >= observed - 1e-12)) / (rounds + 1))


def compare(a: Rewards, b: Rewards, level: float = LEVEL, seed: int = 0) -> Comparison:
    """Policy a against policy b on the same prompts (in the same order, the same sampling seeds):
    the paired difference of per-prompt mean rewards, its bootstrap interval and the sign-flip p-value."""
    if len(a) != len(b):
        raise ValueError(f"a paired comparison needs the same prompts: {len(a)} vs {len(b)} rows")
    ma = np.array([np.mean(r) for r in a], dtype=np.float64)  # [n]
    mb = np.array([np.mean(r) for r in b], dtype=np.float64)  # [n]
    d = ma - mb  # [n]
    if len(d) == 0:
        nan = Estimate(math.nan, math.nan, math.nan, 0)
        return Comparison(nan, nan, nan, math.nan, level)
    means = bootstrap_means(d, seed=seed)
    tail = (1 - level) / 2
    lo, hi = float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
    diff = Estimate(float(d.mean()), lo, hi, len(d))
    ea, eb = mean_interval(ma.tolist(), level, seed), mean_interval(mb.tolist(), level, seed)
    return Comparison(ea, eb, diff, sign_flip_p(d, seed=seed), level)


def eval_metrics(name: str, rewards: Rewards, k: int, level: float = LEVEL) -> dict[str, float]:
    """The metrics row of one environment's eval: `<name>/avg@k` and `<name>/pass@k`, each with its
    interval's bounds as `<key>/lo` and `<key>/hi` (e.g. name = "eval/digits")."""
    out: dict[str, float] = {}
    avg, passed = avg_at_k(rewards, level), pass_at_k(rewards, k, level=level)
    for key, est in ((f"{name}/avg@{k}", avg), (f"{name}/pass@{k}", passed)):
        out |= {key: est.value, f"{key}/lo": est.lo, f"{key}/hi": est.hi}
    return out


def eval_table(scores: Mapping[str, Rewards], k: int, level: float = LEVEL) -> str:
    """`rltrain eval`'s table: per environment, avg@k and pass@k, each with its interval."""
    interval = f"{level:.0%} interval"
    cols = f"{f'avg@{k}':>8} {interval:>15} {f'pass@{k}':>8} {interval:>15}"
    lines = [f"{'environment':32} {'examples':>8} {'k':>3} {cols}"]
    for env, rewards in scores.items():
        cells = " ".join(
            f"{e.value:8.3f} {f'[{e.lo:.3f},{e.hi:.3f}]':>15}"
            for e in (avg_at_k(rewards, level), pass_at_k(rewards, k, level=level))
        )
        lines.append(f"{env:32} {len(rewards):8d} {k:3d} {cells}")
    return "\n".join(lines)


def _cell(e: Estimate) -> str:
    return f"{e.value:.3f} [{e.lo:.3f}, {e.hi:.3f}]"


def _short(name: str, width: int = 24) -> str:
    """A column heading: a long path keeps its last whole components (the full names head the table)."""
    if len(name) <= width:
        return name
    tail = name[-(width - 1) :]
    return "…" + (tail[tail.find("/") :] if "/" in tail else tail)


def comparison_table(results: dict[str, Comparison], names: tuple[str, str] = ("a", "b")) -> str:
    """One line per environment: each side's avg with its interval, the difference, and p."""
    a, b = (_short(n) for n in names)
    lines = [f"{'environment':24} {'n':>4}  {a:>24}  {b:>24}  {'a - b':>24}  {'p':>6}"]
    for env, c in results.items():
        cells = f"{_cell(c.a):>24}  {_cell(c.b):>24}  {_cell(c.diff):>24}"
        lines.append(f"{env:24} {c.diff.n:4d}  {cells}  {c.p_value:6.4f}")
    return "\n".join(lines)


def comparison_json(results: dict[str, Comparison], names: tuple[str, str] = ("a", "b")) -> str:
    """The same as JSON: {"a": name, "b": name, "environments": {env: {a, b, diff, p_value, level}}},
    each estimate as {value, lo, hi, n}."""
    envs = {env: asdict(c) for env, c in results.items()}
    return json.dumps({"a": names[0], "b": names[1], "environments": envs}, indent=2)
