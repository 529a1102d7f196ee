"""The README's environment contract, taken verbatim from the README, trains from outside the repo."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from rltrain.config import parse_config
from rltrain.envs.loader import EnvironmentLoadError, load_rltrain_environment
from rltrain.record import read_jsonl
from rltrain.run import train

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = [b for b in blocks if "def load_environment" in b]
    assert example, "README lost its environment example"
    return example[0]


@pytest.fixture
def env_dir(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "my_env.py").write_text(_readme_example())
    return d


def test_readme_env_trains_by_file_path(env_dir: Path, run_config) -> None:
    env = [{"id": str(env_dir / "my_env.py"), "args": {"n": 12}}]
    cfg = parse_config(run_config(env=env, max_steps=2, eval={"interval": 2, "num_examples": 2}))
    session = train(cfg)
    assert session.record.status == "succeeded"
    rows = read_jsonl(session.run_dir / "metrics.jsonl")
    steps = [r for r in rows if r["step"] > 0]  # row 0: the base model's evaluation
    assert len(steps) == 2 and all(r["errored_rollouts"] == 0 for r in steps)
    # named by the file's stem in the record and the metrics, not by its path
    assert json.loads((session.run_dir / "run.json").read_text())["environment"] == "my_env"
    assert "eval/my_env/avg@1" in rows[0] and "eval/my_env/avg@1" in rows[-1]
    assert not any("outside" in key for row in rows for key in row)


def test_readme_env_trains_as_installed_module(env_dir: Path, run_config, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(env_dir))
    env = load_rltrain_environment("my_env", {"n": 5})
    assert len(env) == 5 and env.rows[0].prompt[0]["role"] == "system"
    assert env.score(env.rows[1], "2")[0] == pytest.approx(1.1)  # exact (1.0) + 0.1 x short
    session = train(parse_config(run_config(env=[{"id": "someone/my-env", "args": {"n": 8}}], max_steps=1)))
    assert session.record.status == "succeeded"
    sys.modules.pop("my_env", None)


def test_missing_module_says_how_to_install() -> None:
    with pytest.raises(EnvironmentLoadError, match="prime env install someone/not-there"):
        load_rltrain_environment("someone/not-there")
    with pytest.raises(EnvironmentLoadError, match="no such file"):
        load_rltrain_environment("/nope/env.py")


def test_environments_readme_example_scores_and_trains(tmp_path: Path, run_config) -> None:
    text = (README.parent / "environments" / "README.md").read_text()
    code = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "def load_environment" in b][0]
    path = tmp_path / "arithmetic_env.py"
    path.write_text(code)
    env = load_rltrain_environment(str(path), {"num_examples": 4})
    row = env.rows[0]
    gold = f"The answer is {row.answer}"
    scored = env.score_group(row, [gold, "Wow! " + gold, "no idea"])
    # gold: correct 1 + polite .1 + shortest .5; exclaimed: 1 + 0 + 0 (longer); wrong: 0 + .1 + 0
    assert [total for total, _ in scored] == pytest.approx([1.6, 1.0, 0.1])
    session = train(parse_config(run_config(env=[{"id": str(path)}], max_steps=1)))
    assert session.record.status == "succeeded"


def test_environments_readme_multi_turn_example_trains(tmp_path: Path, run_config) -> None:
    from rltrain.envs.base import Rollout

    text = (README.parent / "environments" / "README.md").read_text()
    code = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "env_response=respond" in b][0]
    path = tmp_path / "hot_cold.py"
    path.write_text(code)
    env = load_rltrain_environment(str(path), {"n": 4})
    assert env.multi_turn and env.max_turns == 4 and list(env.tools) == ["parity"]
    assert env.tool_schemas()[0]["function"]["parameters"]["properties"]["n"]["type"] == "integer"
    row = env.rows[1]  # answer 2
    state = env.initial_state(row)
    assert env.respond([{"role": "assistant", "content": "5"}], state)[0] == [
        {"role": "user", "content": "Warmer."}
    ]
    new, state = env.respond([{"role": "assistant", "content": "2"}], state)
    assert new is None and state["guesses"] == [5, 2]
    episode = [
        {"role": "assistant", "content": "5"},
        {"role": "user", "content": "Warmer."},
        {"role": "assistant", "content": "2"},
    ]
    assert env.score(row, Rollout(episode, state))[0] == pytest.approx(1.2)
    run = train(parse_config(run_config(env=[{"id": str(path)}], max_steps=2, sampling={"max_tokens": 6})))
    assert run.record.status == "succeeded"
    rows = read_jsonl(run.run_dir / "metrics.jsonl")
    assert all(1.0 <= r["turns_mean"] <= 4.0 and r["errored_rollouts"] == 0 for r in rows)
