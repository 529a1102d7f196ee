"""The OpenEnv kind: the `openenv init` echo scaffold, served by the run from its own venv, trains end to
end; each episode one session, the observations masked between the sampled replies."""

from __future__ import annotations

from pathlib import Path

import pytest

from rltrain.config import parse_config
from rltrain.envs.openenv_server import OpenEnvServer
from rltrain.kinds import kind_of
from rltrain.record import read_jsonl
from rltrain.run import train
from tests.helpers import valid_record

GAME = Path(__file__).resolve().parents[1] / "fixtures" / "openenv" / "guess_game"
READY = '{"echoed_message": "Echo Env environment ready!", "message_length": 0}'


def test_the_echo_scaffold_trains_in_its_own_venv(
    run_config, openenv_python: str, echo_scaffold: Path
) -> None:
    entry = {"openenv": {"path": str(echo_scaffold), "python": openenv_python, "rows": 2, "max_turns": 3}}
    cfg = parse_config(
        run_config(max_steps=2, batch_size=8, rollouts_per_example=4, env=[entry], sampling={"max_tokens": 8})
    )
    assert kind_of(cfg.env[0]).name == "openenv" and cfg.env[0].label == "echo_env"
    run = train(cfg)
    record = valid_record(run.run_dir)
    assert record["status"] == "succeeded" and record["environment"] == "echo_env"
    rows = read_jsonl(run.run_dir / "metrics.jsonl")
    assert [r["errored_rollouts"] for r in rows] == [0.0, 0.0]
    assert max(abs(r["mismatch_kl"]) for r in rows) < 1e-4  # sampled tokens exact, observations masked
    assert all(r["turns_mean"] == 3.0 and r["training_tokens"] > r["output_tokens"] > 0 for r in rows)
    for episode in read_jsonl(run.run_dir / "rollouts" / "step_1.jsonl"):
        assert episode["prompt"] == [{"role": "user", "content": READY}]  # the real first observation
        replies = [m["content"] for m in episode["messages"] if m["role"] == "assistant"]
        echoes = [m["content"] for m in episode["messages"] if m["role"] == "user"]
        assert len(replies) == 3 and len(echoes) == 2 and episode["finish"] == "max_turns"
        assert all(f'"message_length": {len(r)}' in e for r, e in zip(replies, echoes, strict=False))
        # the server's reward: min(0.1 * length, 1) per step, summed
        assert episode["reward"] == pytest.approx(sum(min(0.1 * len(r), 1.0) for r in replies))
        assert episode["parts"] == {"sum": episode["reward"], "invalid_replies": 0.0}


def test_a_running_game_by_url_takes_json_actions_and_is_left_running(
    run_config, openenv_python: str
) -> None:
    """The url form: the run connects, bounds its sessions by max_concurrent, and leaves the server up."""
    with OpenEnvServer.start(GAME, openenv_python) as server:
        game = {"url": server.url, "rows": 2, "max_turns": 2, "reward": "last", "max_concurrent": 2}
        raw = run_config(
            max_steps=1, batch_size=8, rollouts_per_example=4, env=[{"name": "guess", "openenv": game}]
        )
        run = train(parse_config(raw | {"sampling": {"max_tokens": 8}}))
        assert valid_record(run.run_dir)["status"] == "succeeded"
        assert server.proc is not None and server.proc.poll() is None  # not the run's server to stop
        [row] = read_jsonl(run.run_dir / "metrics.jsonl")
        assert row["errored_rollouts"] == 0.0 and abs(row["mismatch_kl"]) < 1e-4
    for episode in read_jsonl(run.run_dir / "rollouts" / "step_1.jsonl"):
        assert episode["prompt"][0]["content"].startswith("Guess my number from 1 to 8 (game ")
        assert episode["prompt"][0]["content"].endswith(
            'Reply with a JSON object for your action: {"guess": integer}.'
        )
        shown = [m["content"] for m in episode["messages"] if m["role"] == "user"]
        refused = sum(text.startswith("Error: ") for text in shown)  # the last reply's answer is never shown
        assert refused <= episode["parts"]["invalid_replies"] <= refused + 1
        assert episode["reward"] in (0.0, -0.1, 1.0)  # the last step's reward (0 when nothing was stepped)


@pytest.mark.slow
def test_the_echo_scaffold_learns_longer_replies(
    run_config, openenv_python: str, echo_scaffold: Path
) -> None:
    """Two tokens a reply: a longer reply earns more of the echo's min(0.1 * length, 1) per step."""
    entry = {"openenv": {"path": str(echo_scaffold), "python": openenv_python, "rows": 4, "max_turns": 3}}
    raw = run_config(
        max_steps=12, batch_size=8, rollouts_per_example=4, env=[entry], sampling={"max_tokens": 2}
    )
    run = train(parse_config(raw))
    rows = read_jsonl(run.run_dir / "metrics.jsonl")
    rewards = [r["reward_mean"] for r in rows]
    print("echo rewards:", [round(r, 3) for r in rewards])
    assert max(abs(r["mismatch_kl"]) for r in rows) < 1e-4
    assert sum(rewards[-3:]) / 3 > 2.8 and sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.3
