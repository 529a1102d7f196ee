"""Safe scoring: async and group reward functions; rewards that raise, hang, crash their interpreter,
eat memory or return NaN are contained in worker processes that are killed and replaced."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rltrain.envs.base import Environment
from rltrain.envs.loader import load_rltrain_environment
from rltrain.envs.scoring import Scorer
from rltrain.envs.workers import EnvSpec, WorkerPool
from rltrain.record import read_jsonl

ENV = """
import asyncio, ctypes, os, time
import rltrain

def exact(completion: str, answer: str) -> float:
    return float(completion == answer)

async def async_len(completion: str) -> float:
    await asyncio.sleep(0)
    return len(completion) / 10

def best_of_group(completions: list[str], answers: list[str]) -> list[float]:
    longest = max(len(c) for c in completions)  # a group reward: 1 for the longest of the group
    return [float(len(c) == longest) for c in completions]

def flaky(completion: str) -> float:
    if completion == "raise":
        raise KeyError("boom")
    if completion == "hang":
        time.sleep(600)
    if completion == "exit":
        os._exit(3)
    if completion == "segfault":
        ctypes.string_at(0)
    if completion == "memory":
        bytearray(8 * 2**30)
    return float("nan") if completion == "nan" else 1.0

def short(completions: list[str]) -> list[float]:
    return [1.0]  # the wrong length for any group of two or more

def load_environment(funcs: str = "exact,async_len,best_of_group", weights: list | None = None):
    chosen = [globals()[f] for f in funcs.split(",")]
    return rltrain.Environment([{"question": "q", "answer": "ab"}], chosen, reward_weights=weights)
"""


@pytest.fixture
def scorer_for(tmp_path: Path) -> Iterator[Callable[..., tuple[Scorer, Environment]]]:
    """scorer_for(funcs, weights=None, **kwargs): the environment, and a scorer whose workers load it."""
    path = tmp_path / "scoring_env.py"
    path.write_text(ENV)
    made: list[Scorer] = []

    def make(funcs: str, weights: list[float] | None = None, **kwargs: float) -> tuple[Scorer, Environment]:
        args = {"funcs": funcs, "weights": weights}
        pool = WorkerPool([EnvSpec("e", str(path), args)], size=2, memory_limit_mb=1024)
        made.append(Scorer(pool, **kwargs))
        return made[-1], load_rltrain_environment(str(path), args)

    yield make
    for scorer in made:
        scorer.close()


def test_async_and_group_functions_combine_with_weights(scorer_for: Callable) -> None:
    scorer, env = scorer_for("exact,async_len,best_of_group", weights=[1.0, 0.5, 2.0])
    scored = scorer.score("e", env, env.rows, [["ab", "abc", "x"]])[0]
    # ab: 1 + .5 * .2 + 0;  abc: 0 + .5 * .3 + 2;  x: 0 + .5 * .1 + 0
    assert scored.rewards == pytest.approx([1.1, 2.15, 0.05])
    assert scored.parts[1] == pytest.approx({"exact": 0.0, "async_len": 0.3, "best_of_group": 1.0})
    assert scored.errored == 0


def test_raise_hang_crash_memory_and_nan_give_error_reward_and_are_counted(scorer_for: Callable) -> None:
    scorer, env = scorer_for("flaky", timeout_s=1.0, error_reward=-1.0)
    completions = ["ok", "raise", "hang", "nan", "exit", "segfault", "memory", "ok"]
    t0 = time.perf_counter()
    scored = scorer.score("e", env, env.rows, [completions])[0]
    assert time.perf_counter() - t0 < 8  # the hang is cut at its timeout, not after 600 s
    assert scored.rewards == [1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, 1.0]
    assert scored.errored == 6
    kinds = {k.split(":")[-1]: n for k, n in scorer.errors_by_kind.items()}
    assert kinds == {"KeyError": 1, "crash": 2, "memory": 1, "non-finite": 1, "timeout": 1}
    assert scorer.pool.failures == {"timeout": 1, "crash": 2, "memory": 1}  # each worker replaced
    assert scorer.score("e", env, env.rows, [["ok"]])[0].rewards == [1.0]  # fresh workers score on


def test_group_function_with_wrong_length_is_an_error(scorer_for: Callable) -> None:
    scorer, env = scorer_for("short")
    scored = scorer.score("e", env, env.rows, [["a", "b"]])[0]
    assert scored.errored == 2 and scored.rewards == [0.0, 0.0]


def test_mixing_singular_and_plural_arguments_is_refused() -> None:
    def bad(completion: str, answers: list[str]) -> float:
        return 0.0

    with pytest.raises(ValueError, match="mixes per-completion"):
        Environment([{"question": "q"}], [bad])


HANGING = """
import time
import rltrain

def sometimes_hangs(completion: str) -> float:
    if '1' in completion:
        time.sleep(600)
    return 0.5

def load_environment():
    return rltrain.Environment([{'question': 'count to 10'}], [sometimes_hangs])
"""


def test_hanging_reward_is_timed_out_and_the_process_exits_at_once(run_config, tmp_path: Path) -> None:
    env_file = tmp_path / "slow_env.py"
    env_file.write_text(HANGING)
    cfg = run_config(env=[{"id": str(env_file)}], max_steps=2, scoring={"timeout_s": 0.5})
    (tmp_path / "c.json").write_text(__import__("json").dumps(cfg))
    script = (
        "import json, sys; from rltrain.config import parse_config; from rltrain.run import train;"
        f"train(parse_config(json.load(open({str(tmp_path / 'c.json')!r}))))"
    )
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "run succeeded" in proc.stdout
    elapsed = time.perf_counter() - start
    rows = read_jsonl(
        tmp_path / "runs" / next(p.name for p in (tmp_path / "runs").iterdir()) / "metrics.jsonl"
    )
    assert sum(r["env/slow_env/errored_rollouts"] for r in rows) > 0
    # the hung calls were killed with their workers: nothing keeps the process alive after its last step
    assert elapsed < 60, elapsed


@pytest.mark.parametrize("value", ["1.0", b"1", "high"])
def test_a_reward_returning_text_is_an_error_naming_the_function(value: str | bytes) -> None:
    def says(completion: str) -> object:
        return value

    env = Environment([{"question": "q"}], [says])
    with pytest.raises(TypeError, match=r"^reward function says returned (str|bytes) .*, not a number$"):
        env.score(env.rows[0], "x")
