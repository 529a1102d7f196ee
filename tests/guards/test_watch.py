"""Each guard on synthetic metric streams: it fires where its condition has held for its window, once
per streak, with the numbers; rollback picks the last checkpoint that passed every guard, at most K
times, then stops."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rltrain.config import ConfigError, parse_config
from rltrain.guards import DEFAULTS, Event, GuardConfig, Guards, resolve


def _guards(**entry: Any) -> Guards:
    """The one guard `entry` describes (the other signals off)."""
    others = [GuardConfig(signal=s, action="off") for s in DEFAULTS if s != entry["signal"]]
    return Guards.from_config([*others, GuardConfig(**entry)])


def _feed(g: Guards, rows: list[dict[str, Any]], start: int = 1) -> dict[int, list[Event]]:
    """Each row as step start, start + 1, ...; the steps where something fired."""
    fired = {}
    for step, row in enumerate(rows, start):
        if events := g.observe(step, row):
            fired[step] = events
    return fired


def test_defaults_warn_on_every_signal_and_entries_replace_them() -> None:
    assert {(g.signal, g.action) for g in resolve([])} == {(s, "warn") for s in DEFAULTS}
    entries = [GuardConfig(signal="entropy", action="off"), GuardConfig(signal="repetition", action="stop")]
    mine = resolve(entries)
    assert "entropy" not in {g.signal for g in mine} and len(mine) == len(DEFAULTS) - 1
    rep = next(g for g in mine if g.signal == "repetition")
    assert (rep.action, rep.threshold, rep.window) == ("stop", 0.5, 3)  # the signal's defaults fill in


def test_the_config_takes_guards_entries_and_names_a_bad_one() -> None:
    base = {"model": "m", "max_steps": 2, "batch_size": 2, "rollouts_per_example": 2, "env": [{"id": "d"}]}
    cfg = parse_config({**base, "guards": [{"signal": "truncation", "action": "rollback", "threshold": 0.8}]})
    assert cfg.guards[0].threshold == 0.8 and cfg.guards[0].lr_factor == 0.5
    with pytest.raises(ConfigError, match=r"guards\.0\.signal: Input should be 'truncation'"):
        parse_config({**base, "guards": [{"signal": "lenght"}]})
    with pytest.raises(ConfigError, match=r"guards\.0\.actoin: unknown key — did you mean action\?"):
        parse_config({**base, "guards": [{"signal": "entropy", "actoin": "stop"}]})
    entries = [{"signal": "entropy"}, {"signal": "truncation", "threshold": 1.5}]
    with pytest.raises(ConfigError, match=r"guards\.1: threshold of truncation must be in \(0, 1\], got 1.5"):
        parse_config({**base, "guards": entries})
    with pytest.raises(ConfigError, match="rollback' does not work with \\[fsdp\\] enabled yet"):
        rollback = [{"signal": "entropy", "action": "rollback"}]
        parse_config({**base, "guards": rollback, "fsdp": {"enabled": True}})


def test_truncation_fires_after_its_window_once_per_streak() -> None:
    g = _guards(signal="truncation")
    shares = [0.5] * 5 + [0.95] * 7 + [0.3] + [0.92] * 5
    fired = _feed(g, [{"truncated_frac": x} for x in shares])
    assert list(fired) == [10, 18]  # the 5th step in a row at >= 0.9, and again after it let go
    (event,) = fired[10]
    assert (event.onset, event.values, event.action) == (6, {"truncated_frac": 0.95}, "warn")
    assert event.message == "guard truncation (warn): truncated_frac 0.95 (threshold 0.9; steps 6-10)"
    assert json.loads(json.dumps(event.row()))["message"] == event.message  # the metrics.jsonl form


def test_length_collapse_is_judged_against_the_first_steps() -> None:
    g = _guards(signal="length_collapse")
    lengths = [20.0, 22.0, 18.0, 10.0, 4.0, 4.0, 6.0, 4.0, 4.0, 4.0]
    fired = _feed(g, [{"completion_len_mean": x} for x in lengths])
    assert list(fired) == [10]  # <= 0.25 x 20 at steps 8, 9, 10 (step 7's 6.0 broke the first streak)
    assert fired[10][0].values == {"completion_len_mean": 4.0, "first_steps_mean": 20.0}
    assert not _feed(_guards(signal="length_collapse"), [{"completion_len_mean": 3.0}] * 10)  # always short


def test_repetition_and_entropy_and_mismatch() -> None:
    rows = [{"repeat_frac": x} for x in (0.1, 0.6, 0.7, 0.8)]
    assert list(_feed(_guards(signal="repetition"), rows)) == [4]
    rows = [{"entropy": 2.0, "training_tokens": 100.0}] + [{"entropy": 0.004, "training_tokens": 9.0}] * 3
    assert list(_feed(_guards(signal="entropy"), rows)) == [4]
    # a step that trained on nothing reports entropy 0 / 0 = 0: not a collapse, and the streak waits
    rows.insert(2, {"entropy": 0.0, "training_tokens": 0.0})
    assert list(_feed(_guards(signal="entropy"), rows)) == [5]
    rows = [{"mismatch_kl": x} for x in (1e-4, 2e-4, 0.3, 1e-4)]
    fired = _feed(_guards(signal="mismatch_kl"), rows)
    assert list(fired) == [3] and fired[3][0].onset == 3  # a spike: one step is enough


def _diverging(evals: dict[int, float]) -> list[dict[str, Any]]:
    """20 steps whose train reward climbs 0.2 -> 0.8, with held-out evals at some steps."""
    rows: list[dict[str, Any]] = [{"reward_mean": 0.2 + 0.03 * s} for s in range(21)]
    for step, value in evals.items():
        rows[step]["eval/digits/avg@4"] = value
    return rows


def test_train_reward_up_while_held_out_eval_is_down() -> None:
    g = _guards(signal="eval_divergence")
    fired = _feed(g, _diverging({0: 0.5, 10: 0.5, 20: 0.3}), start=0)
    (event,) = fired[20]
    assert event.onset == 11  # the weights evaluated at step 10 were still fine
    assert event.values["eval/digits/avg@4_change"] == pytest.approx(-0.2)
    assert event.values["train_reward_change"] == pytest.approx(0.15)
    both_up = _feed(_guards(signal="eval_divergence"), _diverging({0: 0.5, 10: 0.6, 20: 0.7}), start=0)
    assert not both_up
    too_close = _feed(_guards(signal="eval_divergence", window=15), _diverging({10: 0.5, 20: 0.3}), start=0)
    assert not too_close  # evals 10 steps apart, the window asks for 15


def test_no_learning_signal_flat_groups_or_all_errored() -> None:
    flat = [{"reward_mean": 0.5, "flat_group_frac": 1.0, "errored_frac": 0.0}] * 6
    fired = _feed(_guards(signal="no_signal"), flat)
    assert list(fired) == [5]
    errored = [{"reward_mean": 0.0, "flat_group_frac": 1.0, "errored_frac": 1.0}] * 5
    (event,) = _feed(_guards(signal="no_signal"), errored)[5]
    assert event.values == {"flat_group_frac": 1.0, "errored_frac": 1.0}
    # a run whose groups all agree because it learned its task (the demo at reward 1.0) is not flagged
    learned = [{"reward_mean": 0.2, "flat_group_frac": 0.0, "errored_frac": 0.0}] * 4
    learned += [{"reward_mean": 1.0, "flat_group_frac": 1.0, "errored_frac": 0.0}] * 8
    assert not _feed(_guards(signal="no_signal"), learned)


def _repeating(g: Guards, steps: range) -> list[Event]:
    """Feed repetitive steps; the events of the last one."""
    events: list[Event] = []
    for step in steps:
        events = g.observe(step, {"repeat_frac": 0.9})
    return events


def test_rollback_restores_the_last_good_checkpoint_at_most_k_times_then_stops() -> None:
    g = _guards(signal="repetition", action="rollback", lr_factor=0.25, max_rollbacks=2)
    ckpts = ["run/checkpoints/step_5", "run/checkpoints/step_10", "run/checkpoints/step_15"]
    _feed(g, [{"repeat_frac": 0.1}] * 11)  # steps 1-11 fine
    events = _repeating(g, range(12, 15))  # fires at 14, its streak began at 12
    first = g.decide(events, ckpts)
    assert (first.action, first.checkpoint, first.lr_factor) == ("rollback", "run/checkpoints/step_10", 0.25)
    assert "rollback 1/2 to step_10" in first.reason
    # the run goes on counting: step 15 is written after the rollback, from the restored weights
    _feed(g, [{"repeat_frac": 0.1}] * 5, start=15)
    ckpts.append("run/checkpoints/step_20")
    assert g.last_good(["run/checkpoints/step_12", *ckpts]) == "run/checkpoints/step_20"
    assert g.last_good(["run/checkpoints/step_12", "run/checkpoints/step_13"]) is None  # abandoned
    assert g.last_good(["run/checkpoints/step_14"]) == "run/checkpoints/step_14"  # the restored weights
    events = _repeating(g, range(21, 24))
    second = g.decide(events, ckpts)
    assert second.checkpoint == "run/checkpoints/step_15"  # step 20's weights sampled step 21's rollouts
    events = _repeating(g, range(24, 27))
    third = g.decide(events, ckpts)
    assert third.action == "stop" and "already rolled back 2 times" in third.reason


def test_a_rollback_never_lands_on_a_failing_or_abandoned_step() -> None:
    g = _guards(signal="repetition", action="rollback")
    _feed(g, [{"repeat_frac": 0.1}] * 4)
    events = _repeating(g, range(5, 8))
    assert g.decide(events, ["c/step_5", "c/step_6"]).action == "stop"  # both inside the failing streak
    g = _guards(signal="repetition", action="rollback")
    reason = g.decide(_repeating(g, range(1, 4)), []).reason
    assert reason.endswith("no checkpoint before step 0 passed every guard")


def test_stop_and_warn_decisions() -> None:
    g = _guards(signal="mismatch_kl", action="stop")
    decision = g.decide(g.observe(1, {"mismatch_kl": 1.0}), [])
    assert decision.action == "stop" and decision.reason.startswith("guard mismatch_kl (stop): mismatch_kl 1")
    g = _guards(signal="mismatch_kl")
    assert g.decide(g.observe(1, {"mismatch_kl": 1.0}), []).action == "go_on"


def test_state_survives_a_checkpoint_round_trip() -> None:
    g = _guards(signal="repetition", action="rollback", max_rollbacks=1)
    _feed(g, [{"repeat_frac": 0.1, "completion_len_mean": 9.0, "reward_mean": 0.3}] * 4)
    assert g.decide(_repeating(g, range(5, 8)), ["c/step_3", "c/step_4"]).checkpoint == "c/step_3"
    g.observe(8, {"repeat_frac": 0.9})  # a streak under way when the checkpoint is written
    state = json.loads(json.dumps(g.state_dict()))  # plain data: it goes into trainer_state.pt
    again = _guards(signal="repetition", action="rollback", max_rollbacks=1)
    again.load_state_dict(state)
    events = _repeating(again, range(9, 11))  # the streak goes on: 8, 9, 10
    assert [e.step for e in events] == [10] and events[0].onset == 8
    assert again.decide(events, ["c/step_3"]).action == "stop"  # its one rollback is remembered
    assert again.last_good(["c/step_3", "c/step_6"]) == "c/step_3"


def test_a_rollback_goes_before_the_weights_that_sampled_the_first_failing_row() -> None:
    """Serially, step s's rollouts come from the weights after step s - 1; one step ahead, from those
    after step s - 2 (lag = 1 + max_async_level)."""
    ckpts = [f"c/step_{n}" for n in range(1, 9)]
    for lag, target in ((1, "c/step_4"), (2, "c/step_3")):
        g = _guards(signal="repetition", action="rollback")
        g.lag = lag
        _feed(g, [{"repeat_frac": 0.1}] * 5)
        assert _repeating(g, range(6, 8)) == []  # a streak under way: steps 6, 7
        # what keep_last must not prune: the newest good one, and the newest before the streak's weights
        assert g.keep(ckpts[:7]) == sorted({"c/step_7", target})
        assert g.decide(_repeating(g, range(8, 9)), ckpts).checkpoint == target


def _converging(late: dict[str, float]) -> list[dict[str, Any]]:
    """3 steps of a run learning (reward 0.2, some completions scoring 1), then 6 steps of `late`."""
    start = {"reward_mean": 0.2, "reward_max": 1.0, "entropy": 2.0, "completion_len_mean": 20.0}
    late = {"training_tokens": 64.0, "flat_group_frac": 1.0, "errored_frac": 0.0} | late
    return [start] * 3 + [late] * 6


def test_entropy_and_length_falling_because_the_task_is_solved_are_convergence() -> None:
    solved = _converging(
        {"reward_mean": 1.0, "reward_max": 1.0, "entropy": 0.001, "completion_len_mean": 2.0}
    )
    for signal in ("entropy", "length_collapse", "no_signal"):
        assert not _feed(_guards(signal=signal), solved), signal
    # the same collapse with every completion scoring less than the best seen: stuck, not solved
    stuck = _converging({"reward_mean": 0.6, "reward_max": 0.6, "entropy": 0.001, "completion_len_mean": 2.0})
    for signal in ("entropy", "length_collapse", "no_signal"):
        assert list(_feed(_guards(signal=signal), stuck)) == [3 + DEFAULTS[signal].window], signal
    # the hacks' own signals fire however high the reward: a reward that pays repetition is maxed by it
    hacked = _converging({"reward_mean": 1.0, "reward_max": 1.0, "repeat_frac": 0.9, "entropy": 0.001})
    assert list(_feed(_guards(signal="repetition"), hacked)) == [6]


def test_repetition_or_truncation_that_begins_once_the_run_converged_is_not_a_hack() -> None:
    """The demo's shape: the reward reaches its best, then the policy settles on one repeated answer at
    max_tokens; against a reward that pays repetition, which rises with it."""
    learning = [{"reward_mean": r, "reward_max": 1.0} for r in (0.16, 0.25, 0.25, 0.5, 0.78, 0.98)]
    settled = {"reward_mean": 1.0, "reward_max": 1.0, "repeat_frac": 0.95, "truncated_frac": 1.0}
    for signal in ("repetition", "truncation"):
        assert not _feed(_guards(signal=signal), [*learning, *[settled] * 10]), signal
    # the same streak beginning while the reward was still far from its best: it paid for the signal
    paying = [*learning[:4], {"reward_mean": 0.63, "reward_max": 1.0}, *[settled] * 10]
    assert list(_feed(_guards(signal="repetition"), paying)) == [8]
    # an excused streak ends when the condition does; a later one is judged afresh
    g = _guards(signal="repetition")
    again = [*[settled] * 3, {"reward_mean": 0.5, "reward_max": 1.0, "repeat_frac": 0.0}]
    fired = _feed(g, [*learning, *again, *[{"reward_mean": 0.6, "repeat_frac": 0.9}] * 3])
    assert list(fired) == [13]


def test_mismatch_kl_is_judged_only_on_samples_from_the_current_weights() -> None:
    """One step ahead, the KL is mostly the policy's own update: a healthy run's is large."""
    g = _guards(signal="mismatch_kl")
    rows = [{"mismatch_kl": 2.45, "staleness_max": 1.0}, {"mismatch_kl": 0.2, "staleness_max": 0.0}]
    assert list(_feed(g, rows)) == [2]
