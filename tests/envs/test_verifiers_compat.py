"""A classic verifiers environment, built with verifiers' own classes, run through from_verifiers."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from rltrain.envs.base import Environment
from rltrain.envs.verifiers_compat import from_verifiers, is_verifiers_env

ROWS = [
    {"question": "What is 2 + 2?", "answer": "4", "info": {"id": 0}},
    {"question": "What is 3 * 3?", "answer": "9", "info": {"id": 1}},
]
SYSTEM = "Answer inside <answer></answer> tags."


@pytest.fixture
def vf() -> Iterator[ModuleType]:
    module = pytest.importorskip("verifiers")
    if not hasattr(module, "SingleTurnEnv"):
        pytest.skip(f"verifiers {module.__version__} has no classic API (SingleTurnEnv)")
    # Building a verifiers Environment installs its own SIGINT/SIGTERM handlers; keep pytest's.
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield module
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _env(vf: ModuleType, **extra: Any) -> Any:
    from datasets import Dataset

    parser = vf.XMLParser(["answer"], answer_field="answer")

    def correct_answer(completion: Any, answer: str, parser: Any) -> float:
        return 1.0 if parser.parse_answer(completion) == answer else 0.0

    async def uses_tags(completion: Any, info: dict[str, Any], state: Any) -> float:
        # Async, reads messages by key and the row's info and state, as hub environments do.
        assert info["id"] in (0, 1) and state["answer"] in ("4", "9")
        return 1.0 if "<answer>" in completion[-1]["content"] else 0.0

    rubric = vf.Rubric(funcs=[correct_answer, uses_tags], weights=[1.0, 0.25], parser=parser)
    return vf.SingleTurnEnv(
        dataset=Dataset.from_list(ROWS),
        eval_dataset=Dataset.from_list(ROWS[:1]),
        system_prompt=SYSTEM,
        parser=parser,
        rubric=rubric,
        **extra,
    )


def test_converts_dataset_and_prompts(vf: ModuleType) -> None:
    vf_env = _env(vf)
    assert is_verifiers_env(vf_env)
    env = from_verifiers(vf_env)
    assert isinstance(env, Environment) and len(env) == 2
    assert env.eval_rows is not None and len(env.eval_rows) == 1
    assert env.rows[0].prompt == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "What is 2 + 2?"},
    ]
    assert [r.answer for r in env.rows] == ["4", "9"]
    assert env.reward_names()[:2] == ["correct_answer", "uses_tags"]
    assert env.reward_weights[:2] == [1.0, 0.25]


def test_gold_scores_one_and_wrong_scores_zero(vf: ModuleType) -> None:
    env = from_verifiers(_env(vf))
    for row in env.rows:
        total, parts = env.score(row, f"Let me think.\n<answer>{row.answer}</answer>")
        assert parts["correct_answer"] == 1.0 and parts["uses_tags"] == 1.0 and total == 1.25
        total, parts = env.score(row, "<answer>5</answer>")
        assert parts["correct_answer"] == 0.0 and total == 0.25
        assert env.score(row, "no idea")[0] == 0.0


def test_matches_the_rubrics_own_scoring(vf: ModuleType) -> None:
    # Same state through verifiers' Rubric.score_rollout: same per-function values and total.
    from rltrain.envs import verifiers_compat as compat

    vf_env = _env(vf)
    env = from_verifiers(vf_env)
    row = env.rows[1]
    for completion in ("<answer>9</answer>", "<answer>8</answer>", "9"):
        state_cls, normalize = compat._toolkit(vf_env.rubric)
        reply = normalize([{"role": "assistant", "content": completion}])
        state = compat._state(row.info[compat._ROW_KEY], normalize(row.prompt), reply, state_cls)
        asyncio.run(vf_env.rubric.score_rollout(state))
        total, parts = env.score(row, completion)
        assert parts == pytest.approx(state["metrics"]) and total == pytest.approx(state["reward"])


def test_async_reward_inside_a_running_event_loop(vf: ModuleType) -> None:
    env = from_verifiers(_env(vf))

    async def score_from_async_code() -> float:
        return env.score(env.rows[0], "<answer>4</answer>")[0]

    assert asyncio.run(score_from_async_code()) == 1.25


def test_failing_reward_function_scores_zero(vf: ModuleType) -> None:
    from datasets import Dataset

    def broken(completion: Any) -> float:
        raise RuntimeError("boom")

    vf_env = vf.SingleTurnEnv(dataset=Dataset.from_list(ROWS), rubric=vf.Rubric(funcs=[broken]))
    env = from_verifiers(vf_env)
    assert env.score(env.rows[0], "anything")[1]["broken"] == 0.0


def test_group_reward_functions_are_refused(vf: ModuleType) -> None:
    from datasets import Dataset

    def best_of_group(completions: list[Any]) -> list[float]:
        return [1.0] * len(completions)

    vf_env = vf.SingleTurnEnv(dataset=Dataset.from_list(ROWS), rubric=vf.Rubric(funcs=[best_of_group]))
    with pytest.raises(ValueError, match="best_of_group"):
        from_verifiers(vf_env)


def test_non_verifiers_objects_are_refused() -> None:
    plain = Environment([{"question": "q", "answer": "a"}], [lambda completion: 1.0])
    assert not is_verifiers_env(plain) and not is_verifiers_env(object())
    with pytest.raises(TypeError, match="not a verifiers environment"):
        from_verifiers(object())


def test_module_imports_without_verifiers() -> None:
    code = (
        "import sys\n"
        "sys.modules['verifiers'] = None  # makes `import verifiers` fail\n"
        "from rltrain.envs.verifiers_compat import is_verifiers_env\n"
        "print(is_verifiers_env(object()))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_v1_objects_are_refused_with_a_reason() -> None:
    v1 = pytest.importorskip("verifiers.v1")

    class Tasks(v1.Taskset):  # type: ignore[misc, name-defined]
        def load(self) -> list[Any]:
            return []

    tasks = object.__new__(Tasks)  # no config needed to be recognised
    assert not is_verifiers_env(tasks)
    with pytest.raises(TypeError, match="v1"):
        from_verifiers(tasks)


VF_MODULE = """
import verifiers as vf
from datasets import Dataset


def load_environment(n: int = 8):
    parser = vf.XMLParser(["answer"], answer_field="answer")

    def has_digits(completion, parser) -> float:
        text = completion[-1]["content"]
        return sum(c.isdigit() for c in text) / max(len(text), 1)

    rows = [{"question": f"Write {i} as digits.", "answer": str(i)} for i in range(n)]
    return vf.SingleTurnEnv(dataset=Dataset.from_list(rows), system_prompt="Digits only.", parser=parser,
                            rubric=vf.Rubric(funcs=[has_digits], parser=parser))
"""


def test_verifiers_environment_trains_end_to_end(vf: ModuleType, tmp_path: Path, run_config) -> None:
    from rltrain.config import parse_config
    from rltrain.record import read_jsonl
    from rltrain.run import train

    path = tmp_path / "vf_digits.py"
    path.write_text(VF_MODULE)
    session = train(parse_config(run_config(env=[{"id": str(path)}], max_steps=3)))
    assert session.record.status == "succeeded"
    rows = read_jsonl(session.run_dir / "metrics.jsonl")
    assert len(rows) == 3 and all(r["errored_rollouts"] == 0 for r in rows)
    assert all(0.0 < r["reward_mean"] < 1.0 for r in rows)
    first = read_jsonl(session.run_dir / "rollouts" / "step_1.jsonl")[0]
    assert "has_digits" in first["parts"]
