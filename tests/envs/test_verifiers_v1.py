"""verifiers 0.4 (v1) environments run unchanged against rltrain's engine: config translation, the
token endpoint's contract and safety, and a taskset trained end to end (offline, no uv)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from rltrain.config import ConfigError, parse_config
from rltrain.envs.loader import EnvironmentLoadError
from rltrain.envs.openenv_server import OpenEnvServer
from rltrain.envs.verifiers_v1 import load_v1, roles_of, translate
from rltrain.kinds.verifiers import _error_line
from rltrain.record import read_jsonl
from rltrain.rollout.endpoint import TOKEN_VAR
from rltrain.run import train
from tests.helpers import valid_record

pytest.importorskip("verifiers.v1")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "verifiers"


def test_prime_template_shape_is_translated_with_notices() -> None:
    raw, notices = translate({"taskset": {"id": "t"}, "harness": {"id": "default"}}, allow_bash=True)
    assert raw == {
        "taskset": {"id": "t"},
        "agent": {"harness": {"id": "bash"}, "runtime": {"type": "subprocess"}},
    }
    assert len(notices) == 3 and "agent.harness" in notices[0] and "'bash'" in notices[1]
    assert notices[2] == "allow_bash: harness 'bash' (agent) may run the model's commands on this machine"
    plain, none = translate({"taskset": {"id": "t"}}, allow_bash=False)
    assert plain["agent"] == {"harness": {"id": "null"}, "runtime": {"type": "subprocess"}} and not none
    docker, _ = translate(
        {"taskset": {"id": "t"}, "agent": {"runtime": {"type": "docker"}}}, allow_bash=False
    )
    assert docker["agent"]["runtime"] == {"type": "docker"}  # an explicit runtime is kept
    with pytest.raises(ValueError, match="allow_bash = true"):
        translate({"taskset": {"id": "t"}, "agent": {"harness": {"id": "bash"}}}, allow_bash=False)


@pytest.mark.parametrize(
    "harness", ["mini-swe-agent", "terminus-2", "codex", "rlm", "claude-code", "my-taskset"]
)
def test_harnesses_that_run_the_models_commands_here_need_allow_bash(harness: str) -> None:
    entry = {"taskset": {"id": "t"}, "agent": {"harness": {"id": harness}}}
    with pytest.raises(ValueError, match=f"harness '{harness}' .agent. runs the model's commands"):
        translate(entry, allow_bash=False)
    assert translate(entry, allow_bash=True)[0]["agent"]["harness"] == {"id": harness}
    boxed = {**entry, "agent": {**entry["agent"], "runtime": {"type": "docker"}}}
    assert translate(boxed, allow_bash=False)[0]["agent"]["runtime"] == {"type": "docker"}


def test_a_harness_the_environment_pins_itself_needs_allow_bash(monkeypatch, caplog) -> None:
    monkeypatch.syspath_prepend(str(FIXTURES))
    entry = {"taskset": {"id": "shell-pinned-v1"}}
    with pytest.raises(ValueError, match="harness 'bash' .agent. runs the model's commands on this machine"):
        load_v1(entry, None, allow_bash=False)
    env = load_v1(entry, None, allow_bash=True)
    assert len(env.rows) == 8 and "harness 'bash' (agent) runs the model's commands" in caplog.text


def test_the_endpoint_key_reaches_verifiers_client_and_no_environment() -> None:
    import os

    from verifiers.v1 import TrainClientConfig
    from verifiers.v1.clients.base import build_async_openai

    from rltrain.envs.verifiers_v1 import hand_key

    hand_key("RLTRAIN_TEST_KEY_API_KEY", "s3cret")
    try:
        config = TrainClientConfig(base_url="http://127.0.0.1:9/v1", api_key_var="RLTRAIN_TEST_KEY_API_KEY")
        assert build_async_openai(config).api_key == "s3cret"
        assert "RLTRAIN_TEST_KEY_API_KEY" not in os.environ
    finally:
        hand_key("RLTRAIN_TEST_KEY_API_KEY", None)
    assert build_async_openai(config).api_key == "EMPTY"


def test_agent_defaults_go_under_the_environments_own_role_names() -> None:
    raw, notices = translate({"taskset": {"id": "openenv"}, "agent": {"max_turns": 3}}, False, ["player"])
    assert "agent" not in raw and raw["player"] == {
        "max_turns": 3,
        "harness": {"id": "null"},
        "runtime": {"type": "subprocess"},
    }
    assert notices == ["[[env]] agent: this environment's role is 'player'; read as player"]
    both, _ = translate({"taskset": {"id": "t"}}, False, ["assistant", "user"], pinned={"user"})
    assert both["assistant"]["harness"] == {"id": "null"} and "harness" not in both["user"]  # user_sim's own
    assert both["user"]["runtime"] == {"type": "subprocess"}
    with pytest.raises(ValueError, match="roles are solver, judge; set each under verifiers = {solver"):
        translate({"taskset": {"id": "t"}, "agent": {}}, False, ["solver", "judge"])


def test_role_names_are_read_from_each_env_config() -> None:
    assert roles_of({"taskset": {"id": "openenv"}}) == (["player"], set())
    assert roles_of({"taskset": {"id": "x"}, "id": "user-sim"}) == (["assistant", "user"], {"user"})
    assert roles_of({"taskset": {"id": "x"}, "id": "agentic-judge"})[0] == ["solver", "judge"]
    assert roles_of({"taskset": {"id": "count-turns-v1"}})[0] == ["agent"]


def test_verifiers_openenv_taskset_loads_and_learns_its_servers_capacity(
    openenv_python: str, echo_scaffold: Path
) -> None:
    with OpenEnvServer.start(echo_scaffold, openenv_python) as server:
        env = load_v1({"taskset": {"id": "openenv", "base_url": server.url}}, None, allow_bash=False)
        assert env.capacity == 1 and len(env.rows) == 1  # one task per reset; max_concurrent_envs = 1
    error = SimpleNamespace(type="ConnectionClosedOK", message="received 1000 (OK); then sent 1000 (OK)")
    line = _error_line(error, env)
    assert (
        line.startswith("ConnectionClosedOK: received 1000")
        and "holds 1 at once, max_concurrent_envs" in line
    )


def test_a_taskset_or_harness_that_fails_to_import_says_why(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(
        EnvironmentLoadError, match="environment 'textarena': import raised ImportError: textarena"
    ):
        load_v1({"taskset": {"id": "textarena", "game": "Wordle-v0"}}, None, allow_bash=False)
    (tmp_path / "broken_harness").mkdir()
    (tmp_path / "broken_harness" / "__init__.py").write_text("import verifiers.v1.utils.no_such_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(FIXTURES))
    entry = {"taskset": {"id": "count-turns-v1"}, "harness": {"id": "broken-harness"}}
    with pytest.raises(EnvironmentLoadError) as caught:
        load_v1(entry, None, allow_bash=True)  # (allowed: a harness not known to run no commands)
    message = str(caught.value)
    assert "harness 'broken-harness' not found" in message and "\n" not in message
    assert (
        "(the import failed: ModuleNotFoundError: No module named 'verifiers.v1.utils.no_such_module')"
        in message
    )


def test_an_env_entry_needs_an_id_or_a_taskset() -> None:
    base = {"model": "m", "max_steps": 1, "batch_size": 1, "rollouts_per_example": 1}
    with pytest.raises(ConfigError, match="needs an id"):
        parse_config(base | {"env": [{"name": "x"}]})
    cfg = parse_config(
        base | {"env": [{"name": "x", "taskset": {"id": "count-turns-v1"}, "harness": {"id": "null"}}]}
    )
    assert cfg.env[0].label == "x" and cfg.env[0].verifiers_config()["harness"] == {"id": "null"}


def test_a_v1_taskset_trains_end_to_end_offline(run_config, tmp_path: Path) -> None:
    entry = {"name": "count", "taskset": {"id": "count-turns-v1", "turns": 2}, "harness": {"id": "null"}}
    cfg = run_config(
        max_steps=2,
        batch_size=4,
        rollouts_per_example=4,
        env=[entry | {"path": str(FIXTURES)}],
        sampling={"max_tokens": 8},
    )
    leaked: list[bool] = []
    run = train(parse_config(cfg), on_step=lambda step, m: leaked.append(TOKEN_VAR in os.environ))
    assert leaked == [False, False]  # the endpoint's secret: never where a worker would inherit it
    record = valid_record(run.run_dir)
    assert record["status"] == "succeeded" and record["environment"] == "count"
    rows = read_jsonl(run.run_dir / "metrics.jsonl")
    assert [r["errored_rollouts"] for r in rows] == [0.0, 0.0]
    assert [r["refused_sampling"] for r in rows] == [0.0, 0.0]  # verifiers asks for the step's settings
    assert all(r["turns_mean"] == 2.0 and r["training_tokens"] > r["output_tokens"] > 0 for r in rows)
    assert max(abs(r["mismatch_kl"]) for r in rows) < 1e-4  # the traces' tokens and logprobs are the engine's
    episode = read_jsonl(run.run_dir / "rollouts" / "step_1.jsonl")[0]
    roles = [m["role"] for m in episode["messages"]]
    assert (
        roles == ["system", "user", "assistant", "user", "assistant"] and episode["finish"] == "user_closed"
    )
    assert 0.0 <= episode["parts"]["numeric"] <= 1.0
