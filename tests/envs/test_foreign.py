"""Environments in their own interpreter: the foreign worker needs nothing installed there, loads rltrain
environments and classic verifiers ones, and answers the existing pool's calls (describe added)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rltrain.envs.base import Rollout
from rltrain.envs.foreign import ForeignEnvironment, PoolRouter, load_foreign
from rltrain.envs.loader import EnvironmentLoadError, load_rltrain_environment
from rltrain.envs.workers import CallFailed, EnvSpec

CLASSIC = str(Path(__file__).resolve().parents[1] / "fixtures" / "verifiers_classic" / "classic_numbers.py")
NATIVE = '''
import importlib.util
import rltrain

def isolated(completion: str) -> float:
    """1 when none of the trainer's packages can be imported here."""
    return float(all(importlib.util.find_spec(m) is None for m in ("torch", "pydantic", "vllm")))

def echo(messages, state):
    return None if state["turn"] >= 1 else [{"role": "user", "content": "again"}]

def load_environment(word: str = "hi"):
    return rltrain.Environment([{"question": word, "answer": word}], [isolated], env_response=echo)
'''
BROKEN = "def load_environment():\n    raise RuntimeError('no dataset here')\n"


@pytest.fixture
def router() -> Iterator[list[PoolRouter]]:
    made: list[PoolRouter] = []
    yield made
    for r in made:
        r.close()


@pytest.fixture(scope="module")
def classic(classic_python: str) -> Iterator[tuple[PoolRouter, dict[str, ForeignEnvironment]]]:
    """One worker of the classic venv serving the three fixtures (verifiers is imported once)."""
    specs = [
        EnvSpec("m", CLASSIC, {"kind": "multi", "turns": 3}),
        EnvSpec("s", CLASSIC, {"kind": "single"}),
        EnvSpec("t", CLASSIC, {"kind": "tool"}),
    ]
    pool = PoolRouter(specs, {s.name: classic_python for s in specs}, size=1)
    yield pool, {s.name: load_foreign(s, classic_python, pool) for s in specs}
    pool.close()


def test_a_bare_interpreter_runs_an_rltrain_environment(
    bare_python: str, tmp_path: Path, router: list
) -> None:
    path = tmp_path / "native_env.py"
    path.write_text(NATIVE)
    spec = EnvSpec("n", str(path), {"word": "yo"})
    env = load_foreign(spec, bare_python)
    assert isinstance(env, ForeignEnvironment) and env.kind == "rltrain" and env.multi_turn
    assert env.rows[0].prompt == [{"role": "user", "content": "yo"}] and env.reward_names() == ["isolated"]
    here = EnvSpec("d", "digits", {})  # no interpreter of its own: the trainer's
    router.append(PoolRouter([spec, here], {"n": bare_python}, size=1))
    state = env.initial_state(env.rows[0])
    reply, state = router[0].call("n", "respond", [], {**state, "turn": 0}, timeout_s=30)
    assert reply == [{"role": "user", "content": "again"}]
    assert router[0].call("n", "call", 0, env.rows[0], ["yo"], timeout_s=30) == [1.0]  # nothing leaked in
    digits = load_rltrain_environment("digits")
    assert router[0].call("d", "call", 0, digits.rows[0], ["1234"], timeout_s=30) == [1.0]
    assert set(router[0].pools) == {bare_python, None}


def test_a_load_error_is_one_line_with_the_other_sides_traceback(bare_python: str, tmp_path: Path) -> None:
    path = tmp_path / "broken_env.py"
    path.write_text(BROKEN)
    with pytest.raises(EnvironmentLoadError) as caught:
        load_foreign(EnvSpec("b", str(path), {}), bare_python)
    assert "environment 'b'" in str(caught.value) and "RuntimeError: no dataset here" in str(caught.value)
    assert "\n" not in str(caught.value) and "raise RuntimeError" in str(caught.value.__cause__)


def test_classic_multi_turn_env_response_stop_conditions_and_state(classic: tuple) -> None:
    pool, envs = classic
    env = envs["m"]
    assert env.kind == "verifiers 0.1.14 MultiTurnEnv" and len(env.rows) == 8 and env.multi_turn
    assert env.rows[0].prompt[0] == {"role": "system", "content": "Answer with numbers."}
    assert env.reward_names() == ["digit_share", "num_turns"] and env.reward_weights == [1.0, 0.0]
    assert env.max_turns == 10  # MultiTurnEnv's -1 (no limit) gets rltrain's cap
    row, state = env.rows[0], env.initial_state(env.rows[0])
    messages = [*row.prompt, {"role": "assistant", "content": "12"}]
    for expected in ("Another number. (2)", "Another number. (3)"):
        reply, state = pool.call("m", "respond", messages, state, timeout_s=60)
        assert reply == [{"role": "user", "content": expected}] and state["_vf"]["asked"] == int(expected[-2])
        messages += [*reply, {"role": "assistant", "content": "3 x"}]
    reply, state = pool.call("m", "respond", messages, state, timeout_s=60)
    assert reply is None and state["stop_condition"] == "asked_enough"
    done = Rollout(messages[len(row.prompt) :], state)
    assert pool.call("m", "call", 0, row, [done], timeout_s=60) == pytest.approx([(1 + 0.5 + 0.5) / 3])
    assert pool.call("m", "call", 1, row, [done], timeout_s=60) == [3.0]  # num_turns: the trajectory


def test_classic_single_turn_rubric_weights_parser_async_and_group(classic: tuple) -> None:
    pool, envs = classic
    env = envs["s"]
    assert not env.multi_turn and env.max_turns == 1 and env.rows[1].answer == "2"
    assert env.reward_weights == [1.0, 0.5, 0.25, 0.0]
    assert [env.is_group_func(i) for i in range(4)] == [False, False, True, False]
    row = env.rows[1]
    texts = ["<answer>2</answer>", "<answer>3</answer> and more"]
    assert [pool.call("s", "call", 0, row, [t], timeout_s=60)[0] for t in texts] == [1.0, 0.0]  # the parser
    assert pool.call("s", "call", 1, row, [texts[0]], timeout_s=60) == [1.0]  # async; state, info and task
    assert pool.call("s", "call", 2, row, texts, timeout_s=60) == [0.0, 1.0]  # a group function
    scored = env.combine([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    assert [total for total, _ in scored] == [1.5, 0.75]


def test_classic_tool_env_schemas_and_tool_errors(classic: tuple) -> None:
    pool, envs = classic
    env = envs["t"]
    assert list(env.tools) == ["add"] and env.max_turns == 3
    schema = env.tool_schemas()[0]["function"]
    assert schema["name"] == "add" and schema["parameters"]["required"] == ["a", "b"]
    assert pool.call("t", "run_tool", "add", {"a": 2, "b": 3}, timeout_s=60) == "5"
    # ToolEnv's error_formatter: the model reads the error, the episode goes on
    assert "missing 1 required positional argument" in pool.call(
        "t", "run_tool", "add", {"a": 2}, timeout_s=60
    )
    with pytest.raises(CallFailed, match="no tool named 'sub'"):
        pool.call("t", "run_tool", "sub", {}, timeout_s=60)
