"""The landed check's rule on hand-made logprobs (the engines' real margins: tests/test_run.py, bf16)."""

from __future__ import annotations

import pytest

from rltrain.orchestrator.adapter_sync import AdapterNotLanded, LandedCheck, LandedRule

BASE = [-1.0, -2.0, -3.0, -4.0]
NOISE = [0.02, -0.02, 0.02, -0.02]  # the engine's kernels: 0.02 off the trainer on every token


def _plus(xs: list[float], d: float | list[float]) -> list[float]:
    ds = d if isinstance(d, list) else [d] * len(xs)
    return [x + y for x, y in zip(xs, ds, strict=True)]


def _check(rule: LandedRule | None = None) -> LandedCheck:
    check = LandedCheck(rule or LandedRule(), "vllm")
    assert check.calibrate(_plus(BASE, NOISE), BASE) == {"landed_floor": pytest.approx(0.02)}
    return check


def test_the_floor_is_measured_on_the_base_model_with_a_minimum() -> None:
    check = LandedCheck(LandedRule(), "vllm")
    check.calibrate(BASE, BASE)  # identical kernels (the hf engine): the fp32 minimum applies
    assert check.floor == 2.5e-4 and check.rule.bound(check.floor) == pytest.approx(1e-3)
    assert _check().floor == pytest.approx(0.02)


def test_a_landed_adapter_passes_and_a_stale_or_ignored_one_fails() -> None:
    check = _check()
    v1 = _plus(BASE, 0.3)  # the trainer after an update: 0.3 from the base model = 15 floors
    out = check.judge(_plus(v1, NOISE), v1)
    # d(E, T) = 0.02; d(E, base) = mean |0.3 +- 0.02| = 0.3: rho = 0.02 / 0.3
    assert out == {"landed_diff": pytest.approx(0.02), "landed_ratio": pytest.approx(0.02 / 0.3)}
    v2 = _plus(v1, [0.1, -0.1, 0.1, -0.1])  # 0.1 = 5 floors from v1
    with pytest.raises(AdapterNotLanded, match="by only 0.02 from the previous adapter's: the engine kept"):
        check.judge(_plus(v1, NOISE), v2)  # v1 still served: d(E, T) = mean |0.1 - 0.02|.. = 0.1
    with pytest.raises(AdapterNotLanded, match="base model's: the adapter was ignored"):
        check.judge(_plus(BASE, NOISE), v2)
    # landed: d(E, T) = 0.02; nearest alternative v1 (failed checks leave it the last): |0.1 + 0.02| = 0.12
    assert check.judge(_plus(v2, NOISE), v2)["landed_ratio"] == pytest.approx(0.02 / 0.12)


def test_an_adapter_within_noise_of_every_alternative_is_judged_by_the_bound_alone() -> None:
    check = _check()
    near = _plus(BASE, 0.03)  # 1.5 floors from the base model: under the 2-floor gate
    # d = mean(|0.02 - 0.03|, |-0.02 - 0.03|) = 0.03 <= 4f = 0.08
    assert check.judge(_plus(BASE, NOISE), near) == {"landed_diff": pytest.approx(0.03)}
    with pytest.raises(AdapterNotLanded, match=r"by 0.09 \(noise floor 0.02, bound 0.08\)"):
        check.judge(_plus(BASE, 0.12), near)  # an engine far from both: the bound catches it
    fixed = _check(LandedRule(override=0.1))
    assert fixed.judge(_plus(BASE, 0.12), near)["landed_diff"] == pytest.approx(0.09)


def test_the_first_sync_probe_must_be_told_apart_from_the_base_model() -> None:
    check = _check()
    loud = _plus(BASE, 1.0)
    out = check.judge(_plus(loud, NOISE), loud, calibrating=True)
    assert out["landed_ratio"] == pytest.approx(0.02 / 1.0) and check.last is None
    with pytest.raises(AdapterNotLanded, match="ignored"):
        check.judge(_plus(BASE, NOISE), loud, calibrating=True)
    with pytest.raises(AdapterNotLanded, match="within noise of the base model"):
        check.judge(_plus(BASE, NOISE), _plus(BASE, 0.01), calibrating=True)
