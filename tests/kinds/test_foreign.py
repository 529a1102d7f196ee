"""The foreign kind: a classic verifiers 0.1.14 environment trains unchanged in its own venv
(`[[env]] python = ...`), its rows, rewards and env_response in workers of that interpreter."""

from __future__ import annotations

from pathlib import Path

import pytest

from rltrain.config import parse_config
from rltrain.envs.loader import EnvironmentLoadError
from rltrain.kinds import kind_of
from rltrain.orchestrator.slots import build_slots
from rltrain.record import read_jsonl
from rltrain.run import train
from tests.helpers import valid_record

CLASSIC = str(Path(__file__).resolve().parents[1] / "fixtures" / "verifiers_classic" / "classic_numbers.py")


def test_a_classic_multi_turn_env_trains_in_its_own_venv(run_config, classic_python: str) -> None:
    entry = {"id": CLASSIC, "name": "numbers", "args": {"turns": 2, "rows": 4}, "python": classic_python}
    cfg = parse_config(
        run_config(max_steps=2, batch_size=8, rollouts_per_example=4, env=[entry], sampling={"max_tokens": 8})
    )
    assert kind_of(cfg.env[0]).name == "foreign"
    run = train(cfg)
    record = valid_record(run.run_dir)
    assert record["status"] == "succeeded" and record["environment"] == "numbers"
    rows = read_jsonl(run.run_dir / "metrics.jsonl")
    assert [r["errored_rollouts"] for r in rows] == [0.0, 0.0]
    assert max(abs(r["mismatch_kl"]) for r in rows) < 1e-4  # sampled tokens exact, env messages masked
    assert all(r["turns_mean"] == 2.0 and r["training_tokens"] > r["output_tokens"] > 0 for r in rows)
    assert all(0.0 <= r["reward_mean"] <= 1.0 for r in rows)
    episode = read_jsonl(run.run_dir / "rollouts" / "step_1.jsonl")[0]
    assert [m["role"] for m in episode["messages"]] == ["assistant", "user", "assistant"]
    assert episode["messages"][1]["content"] == "Another number. (2)" and episode["finish"] == "done"
    digits = [c for c in episode["messages"][0]["content"] + episode["messages"][2]["content"] if c.isdigit()]
    assert set(episode["parts"]) == {"digit_share", "num_turns"} and episode["parts"]["num_turns"] == 2.0
    assert (episode["reward"] > 0) == bool(digits)  # the environment's own rubric, in its interpreter


@pytest.mark.slow
def test_a_classic_single_turn_and_a_tool_env_train_side_by_side(run_config, classic_python: str) -> None:
    """Two environments of one interpreter, each with its own pool: a SingleTurnEnv with a weighted Rubric
    (a parser, an async function reading state/info/task, a group function) and a ToolEnv."""
    envs = [
        {"id": CLASSIC, "name": "single", "args": {"kind": "single"}, "python": classic_python},
        {"id": CLASSIC, "name": "tool", "args": {"kind": "tool"}, "python": classic_python},
    ]
    raw = run_config(max_steps=2, batch_size=16, rollouts_per_example=4, env=envs, sampling={"max_tokens": 8})
    run = train(parse_config(raw))
    assert valid_record(run.run_dir)["status"] == "succeeded"
    rows = read_jsonl(run.run_dir / "metrics.jsonl")
    assert [r["errored_rollouts"] for r in rows] == [0.0, 0.0]
    assert max(abs(r["mismatch_kl"]) for r in rows) < 1e-4
    episodes = [e for step in (1, 2) for e in read_jsonl(run.run_dir / "rollouts" / f"step_{step}.jsonl")]
    single = [e for e in episodes if e["env"] == "single"]
    tool = [e for e in episodes if e["env"] == "tool"]
    assert single and tool  # seed 0 draws both
    for e in single:  # exact 1.0, knows_state 0.5 (state, info and task reach it: 1 here), a group function
        assert set(e["parts"]) == {"exact", "knows_state", "longest_of_group", "num_turns"}
        assert e["parts"]["knows_state"] == 1.0 and e["parts"]["num_turns"] == 1.0
        assert e["reward"] == pytest.approx(e["parts"]["exact"] + 0.5 + 0.25 * e["parts"]["longest_of_group"])
    for e in tool:
        assert {"digit_share", "total_tool_calls", "add_calls"} <= set(e["parts"]) and e["finish"] == "done"


def test_a_classic_env_in_the_trainers_venv_is_refused_with_how_to_give_it_its_own(run_config) -> None:
    cfg = parse_config(run_config(env=[{"id": CLASSIC}]))
    assert kind_of(cfg.env[0]).name == "native"
    with pytest.raises(EnvironmentLoadError) as caught:
        build_slots(cfg)
    line = str(caught.value)
    assert "\n" not in line and "envs venv" in line and 'its [[env]]: python = ".../bin/python"' in line


def test_a_missing_interpreter_is_one_line(run_config, tmp_path: Path) -> None:
    cfg = parse_config(run_config(env=[{"id": CLASSIC, "python": str(tmp_path / "nope" / "bin" / "python")}]))
    with pytest.raises(EnvironmentLoadError, match="no such interpreter .*envs venv"):
        build_slots(cfg)


@pytest.mark.slow
def test_a_classic_multi_turn_env_learns_in_its_own_venv(run_config, classic_python: str) -> None:
    """The digits share of the replies rises (the ecosystem helper's scratch wiring: 0.14 -> 0.99)."""
    entry = {"id": CLASSIC, "name": "numbers", "args": {"turns": 2, "rows": 8}, "python": classic_python}
    raw = run_config(
        max_steps=20, batch_size=16, rollouts_per_example=4, env=[entry], sampling={"max_tokens": 8}
    )
    run = train(parse_config(raw))
    rewards = [r["reward_mean"] for r in read_jsonl(run.run_dir / "metrics.jsonl")]
    print("classic multi-turn rewards:", [round(r, 3) for r in rewards])
    assert sum(rewards[-3:]) / 3 > 0.8 and sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.3
