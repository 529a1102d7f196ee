"""OpenEnv natively: the `openenv init` echo scaffold and a multi-step text game, each served by openenv
0.10 from its own venv; sessions, action mapping, rewards, the turn cap and the server's capacity."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from rltrain.envs.base import Message
from rltrain.envs.openenv_client import CapacityError, OpenEnvClient, OpenEnvSpec
from rltrain.envs.openenv_server import ActionMapper, OpenEnvError, OpenEnvServer

GAME = Path(__file__).resolve().parents[1] / "fixtures" / "openenv" / "guess_game"


@pytest.fixture(scope="module")
def echo(openenv_python: str, echo_scaffold: Path) -> Iterator[OpenEnvClient]:
    client = OpenEnvClient.open(
        OpenEnvSpec(path=str(echo_scaffold), python=openenv_python, rows=2, max_turns=3)
    )
    yield client
    client.close()


@pytest.fixture(scope="module")
def game(openenv_python: str) -> Iterator[OpenEnvClient]:
    client = OpenEnvClient.open(OpenEnvSpec(path=str(GAME), python=openenv_python, rows=3, max_turns=5))
    yield client
    client.close()


def _replies(*texts: str):  # noqa: ANN202
    queue = list(texts)

    async def reply(messages: list[Message]) -> str:
        return queue.pop(0)

    return reply


def test_the_echo_scaffold_episode_is_capped_and_its_rewards_summed(echo: OpenEnvClient) -> None:
    assert echo.capacity == 1 and echo.mapper.text_field == "message"  # the scaffold's max_concurrent_envs
    rows = echo.rows()
    first = '{"echoed_message": "Echo Env environment ready!", "message_length": 0}'
    assert [r.prompt for r in rows] == [[{"role": "user", "content": first}]] * 2  # the real observation
    assert [r.info for r in rows] == [{"seed": 0}, {"seed": 1}]
    out = asyncio.run(echo.run_episode(rows[0], _replies("hi", "hello", "a")))
    assert out.finish == "max_turns" and out.turns == 3 and out.step_rewards == pytest.approx([0.2, 0.5, 0.1])
    assert out.reward == pytest.approx(0.8)  # sum: min(0.1 * len, 1) per step
    assert [m["role"] for m in out.messages] == ["assistant", "user", "assistant", "user", "assistant"]
    assert out.messages[1]["content"] == '{"echoed_message": "hi", "message_length": 2}'


def test_a_session_over_capacity_is_an_error_naming_the_limit(echo: OpenEnvClient) -> None:
    async def two_sessions() -> None:
        async with echo.session() as held:
            await held.reset(0)
            async with echo.session() as refused:
                await refused.reset(1)

    with pytest.raises(CapacityError, match=r"at capacity \(max_concurrent_envs = 1\)"):
        asyncio.run(two_sessions())


def test_a_text_game_takes_json_actions_and_counts_replies_that_are_none(game: OpenEnvClient) -> None:
    assert game.capacity == 4 and game.mapper.text_field is None  # the game's max_concurrent_envs
    row = game.rows()[2]  # seed 2: the number is 1
    assert row.prompt[0]["content"].startswith("Guess my number from 1 to 8 (game 2).")
    assert 'Reply with a JSON object for your action: {"guess": integer}' in row.prompt[0]["content"]
    replies = ("five", '{"guess": 9}', '```json\n{"guess": 3}\n```', '{"guess": 1}')
    out = asyncio.run(game.run_episode(row, _replies(*replies)))
    assert out.finish == "done" and out.turns == 4 and out.invalid_replies == 2
    assert out.messages[1]["content"].startswith("Error: your reply is not JSON")
    assert "refused the action" in out.messages[3]["content"]  # the server's own validation: le=8
    assert out.messages[5]["content"] == "lower" and out.step_rewards == [-0.1, 1.0]
    assert out.reward == pytest.approx(0.9)
    game.spec = dataclasses.replace(game.spec, reward="last")
    assert asyncio.run(game.run_episode(row, _replies(*replies))).reward == 1.0


def test_action_mapping_from_the_schema() -> None:
    text = ActionMapper({"properties": {"message": {"type": "string"}, "metadata": {"type": "object"}}})
    assert text.to_action("anything {") == {"message": "anything {"} and text.instructions() == ""
    schema = {"properties": {"x": {"type": "integer"}, "why": {"type": "string"}}, "required": ["x"]}
    act = ActionMapper(schema | {"additionalProperties": False})
    assert act.to_action('{"x": 2}') == {"x": 2}
    with pytest.raises(ValueError, match="missing: x; unknown: y"):
        act.to_action('{"y": 1}')
    with pytest.raises(ValueError, match="wrong type: x"):
        act.to_action('{"x": "2"}')


def test_a_server_that_fails_at_start_says_why(openenv_python: str, tmp_path: Path) -> None:
    (tmp_path / "openenv.yaml").write_text("app: nowhere.app:app\n")
    with pytest.raises(OpenEnvError, match="exited with status .* at start: .*nowhere"):
        OpenEnvServer.start(tmp_path, openenv_python, timeout_s=60)
    with pytest.raises(ValueError, match="needs a url, or a path"):
        OpenEnvClient.open(OpenEnvSpec())
