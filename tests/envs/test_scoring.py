"""Safe scoring: async and group reward functions; raising, hanging and NaN rewards are contained."""

from __future__ import annotations

import time

import pytest

from rltrain.config import parse_config
from rltrain.envs.base import Environment
from rltrain.envs.scoring import Scorer
from rltrain.record import read_jsonl
from rltrain.run import train

ROWS = [{"question": "q", "answer": "ab"}]


def exact(completion: str, answer: str) -> float:
    return float(completion == answer)


async def async_len(completion: str) -> float:
    return len(completion) / 10


def best_of_group(completions: list[str], answers: list[str]) -> list[float]:
    # a group reward: 1 for the longest completion(s) of the group
    longest = max(len(c) for c in completions)
    return [float(len(c) == longest) for c in completions]


def test_async_and_group_functions_combine_with_weights() -> None:
    env = Environment(ROWS, [exact, async_len, best_of_group], reward_weights=[1.0, 0.5, 2.0])
    scored = Scorer().score("e", env, env.rows, [["ab", "abc", "x"]])[0]
    # ab: 1 + .5 * .2 + 0;  abc: 0 + .5 * .3 + 2;  x: 0 + .5 * .1 + 0
    assert scored.rewards == pytest.approx([1.1, 2.15, 0.05])
    assert scored.parts[1] == pytest.approx({"exact": 0.0, "async_len": 0.3, "best_of_group": 1.0})
    assert scored.errored == 0


def test_raise_hang_and_nan_give_error_reward_and_are_counted() -> None:
    def flaky(completion: str) -> float:
        if completion == "raise":
            raise KeyError("boom")
        if completion == "hang":
            time.sleep(3)
        return float("nan") if completion == "nan" else 1.0

    env = Environment(ROWS, [flaky])
    scorer = Scorer(timeout_s=0.3, error_reward=-1.0)
    t0 = time.perf_counter()
    scored = scorer.score("e", env, env.rows, [["ok", "raise", "hang", "nan", "ok"]])[0]
    assert time.perf_counter() - t0 < 2.5
    assert scored.rewards == [1.0, -1.0, -1.0, -1.0, 1.0]
    assert scored.errored == 3
    assert sorted(k.split(":")[-1] for k in scorer.errors_by_kind) == ["KeyError", "non-finite", "timeout"]
    # after a timeout the pool is fresh: scoring still works
    assert scorer.score("e", env, env.rows, [["ok"]])[0].rewards == [1.0]


def test_group_function_with_wrong_length_is_an_error() -> None:
    env = Environment(ROWS, [lambda completions: [1.0]])
    scored = Scorer().score("e", env, env.rows, [["a", "b"]])[0]
    assert scored.errored == 2 and scored.rewards == [0.0, 0.0]


def test_mixing_singular_and_plural_arguments_is_refused() -> None:
    def bad(completion: str, answers: list[str]) -> float:
        return 0.0

    with pytest.raises(ValueError, match="mixes per-completion"):
        Environment(ROWS, [bad])


def test_hanging_reward_mid_run_finishes_succeeded(run_config, tmp_path) -> None:
    env_file = tmp_path / "slow_env.py"
    env_file.write_text(
        "import time\nimport rltrain\n"
        "def sometimes_hangs(completion: str) -> float:\n"
        "    if '1' in completion:\n"
        "        time.sleep(2)\n"
        "    return 0.5\n"
        "def load_environment():\n"
        "    return rltrain.Environment([{'question': 'count to 10'}], [sometimes_hangs])\n"
    )
    cfg = parse_config(run_config(env=[{"id": str(env_file)}], max_steps=2, scoring={"timeout_s": 0.2}))
    session = train(cfg)
    assert session.record.status == "succeeded"
    rows = read_jsonl(session.run_dir / "metrics.jsonl")
    assert sum(r["env/" + str(env_file) + "/errored_rollouts"] for r in rows) > 0
