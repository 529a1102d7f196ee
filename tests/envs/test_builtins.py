"""Built-in environments: gold answers score 1.0, wrong ones 0.0, loaded the way a config loads them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rltrain.envs.base import Environment, Row
from rltrain.envs.loader import EnvironmentLoadError, load_rltrain_environment


def _gsm8k_dir() -> Path:
    # /work/main/tests/envs/this.py -> /work/shared/data/gsm8k, unless the env var points elsewhere.
    default = Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k"
    path = Path(os.environ.get("RLTRAIN_GSM8K_DIR", default))
    if not (path / "train.jsonl").is_file() or not (path / "test.jsonl").is_file():
        pytest.skip(f"no GSM8K train.jsonl/test.jsonl in {path} (set RLTRAIN_GSM8K_DIR)")
    return path


@pytest.fixture(scope="module")
def gsm8k() -> Environment:
    return load_rltrain_environment("gsm8k", {"data_dir": str(_gsm8k_dir())})


def _with_answer(row: Row, answer: Any) -> Row:
    return Row(prompt=row.prompt, answer=answer, info=row.info)


# ---- gsm8k -------------------------------------------------------------------------------------


def test_gsm8k_loads_both_splits_with_numeric_answers(gsm8k: Environment) -> None:
    assert len(gsm8k.rows) == 7473 and gsm8k.eval_rows is not None and len(gsm8k.eval_rows) == 1319
    first = gsm8k.rows[0]
    assert first.prompt[0]["role"] == "system" and "\\boxed" in first.prompt[0]["content"]
    assert first.prompt[-1]["content"].startswith("Natalia sold clips")
    assert first.answer == "72"
    assert all("####" not in r.answer and "," not in r.answer for r in gsm8k.rows + gsm8k.eval_rows)


def test_gsm8k_gold_scores_one_and_wrong_scores_zero(gsm8k: Environment) -> None:
    assert gsm8k.eval_rows is not None
    rows = gsm8k.rows[:40] + gsm8k.eval_rows[:40]
    for row in rows:
        assert gsm8k.score(row, f"Step by step... so the answer is \\boxed{{{row.answer}}}.")[0] == 1.0
        assert gsm8k.score(row, f"The answer is {row.answer}")[0] == 1.0
        wrong = int(float(row.answer)) + 1
        assert gsm8k.score(row, f"\\boxed{{{wrong}}}")[0] == 0.0
        assert gsm8k.score(row, f"The answer is {wrong}")[0] == 0.0


def test_gsm8k_reference_solutions_score_one(gsm8k: Environment) -> None:
    # The dataset's own worked solutions end in "#### N": the last number is the answer.
    lines = (_gsm8k_dir() / "test.jsonl").read_text().splitlines()[:30]
    assert gsm8k.eval_rows is not None
    for line, row in zip(lines, gsm8k.eval_rows, strict=False):
        assert gsm8k.score(row, json.loads(line)["answer"])[0] == 1.0


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        ("She earns \\boxed{1,234} dollars.", "1234", 1.0),
        ("Total: 1,234 dollars", "1234", 1.0),
        ("\\boxed{\\$18.00}", "18", 1.0),
        ("\\boxed{\\frac{36}{2}}", "18", 1.0),
        ("\\boxed{18}. Check: 17 + 1 = 18, not 19", "18", 1.0),  # boxed wins over the last number
        ("first 18, then 19", "18", 0.0),  # no box: the last number counts
        ("\\boxed{-3}", "-3", 1.0),
        ("\\boxed{0.5}", "0.5", 1.0),
        ("I don't know", "18", 0.0),
        ("", "18", 0.0),
        ("\\boxed{" + "1" * 500 + "}", "18", 0.0),
    ],
)
def test_gsm8k_answer_extraction(gsm8k: Environment, completion: str, answer: str, expected: float) -> None:
    assert gsm8k.score(_with_answer(gsm8k.rows[0], answer), completion)[0] == expected


def test_gsm8k_subset_is_seeded() -> None:
    args = {"data_dir": str(_gsm8k_dir()), "num_examples": 16, "eval_examples": 8, "seed": 3}
    a, b = load_rltrain_environment("gsm8k", args), load_rltrain_environment("gsm8k", args)
    c = load_rltrain_environment("gsm8k", {**args, "seed": 4})
    assert len(a) == 16 and a.eval_rows is not None and len(a.eval_rows) == 8
    assert [r.prompt for r in a.rows] == [r.prompt for r in b.rows] != [r.prompt for r in c.rows]


def test_gsm8k_default_reads_the_hub_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls: list[tuple[Any, ...]] = []

    def fake_load_dataset(*args: Any, **kwargs: Any) -> datasets.Dataset:
        calls.append((*args, kwargs.get("split")))
        return datasets.Dataset.from_list([{"question": "1+1?", "answer": "1+1=2\n#### 2"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    env = load_rltrain_environment("gsm8k", {})
    assert calls == [("openai/gsm8k", "main", "train"), ("openai/gsm8k", "main", "test")]
    assert env.rows[0].answer == "2"


# ---- reasoning-gym -----------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["leg_counting", "basic_arithmetic", "caesar_cipher"])
def test_reasoning_gym_gold_scores_one_and_wrong_scores_zero(task: str) -> None:
    env = load_rltrain_environment("reasoning-gym", {"task": task, "num_examples": 12, "eval_examples": 6})
    assert len(env.rows) == 12 and env.eval_rows is not None and len(env.eval_rows) >= 5
    for row in env.rows + env.eval_rows:
        assert row.info["entry"]["question"] == row.prompt[-1]["content"]
        assert env.score(row, f"Thinking...\n<answer>{row.answer}</answer>")[0] == 1.0
        assert env.score(row, str(row.answer))[0] == 1.0  # no tags: the whole completion is the answer
        assert env.score(row, "<answer>zzz qqq</answer>")[0] == 0.0


def test_reasoning_gym_eval_is_held_out_and_seeded() -> None:
    args = {"task": "basic_arithmetic", "num_examples": 30, "eval_examples": 10, "seed": 5}
    env, again = (
        load_rltrain_environment("reasoning-gym", args),
        load_rltrain_environment("reasoning-gym", args),
    )
    assert env.eval_rows is not None
    train = {r.prompt[-1]["content"] for r in env.rows}
    assert not train & {r.prompt[-1]["content"] for r in env.eval_rows}
    assert [r.prompt for r in env.rows] == [r.prompt for r in again.rows]


def test_reasoning_gym_unknown_task_names_valid_ones() -> None:
    with pytest.raises(
        EnvironmentLoadError, match="load_environment raised ValueError: .* did you mean leg_counting"
    ):
        load_rltrain_environment("reasoning-gym", {"task": "leg_count"})


# ---- reverse-text ------------------------------------------------------------------------------


def test_reverse_text_scores() -> None:
    env = load_rltrain_environment("reverse-text", {"num_examples": 50, "eval_examples": 10, "seed": 1})
    assert env.eval_rows is not None and len(env.eval_rows) == 10
    for row in env.rows + env.eval_rows:
        text = row.info["text"]
        assert row.answer == text[::-1] and text in row.prompt[-1]["content"]
        assert env.score(row, row.answer)[0] == 1.0
        assert env.score(row, f"  <reversed_text>{row.answer}</reversed_text>\n")[0] == 1.0
        assert env.score(row, "0123456789")[0] == 0.0  # shares no character with any word
        assert env.score(row, "")[0] == 0.0
        if text != row.answer:  # palindromes aside, the unreversed text is poor
            assert env.score(row, text)[0] < 0.6
    row = env.rows[0]
    assert 0.5 < env.score(row, row.answer[:-1])[0] < 1.0  # near misses earn partial credit


def test_reverse_text_is_seeded_and_eval_is_held_out() -> None:
    a = load_rltrain_environment("reverse-text", {"num_examples": 200, "eval_examples": 50, "seed": 7})
    b = load_rltrain_environment("reverse-text", {"num_examples": 200, "eval_examples": 50, "seed": 7})
    c = load_rltrain_environment("reverse-text", {"num_examples": 200, "eval_examples": 50, "seed": 8})
    assert a.eval_rows is not None
    assert [r.answer for r in a.rows] == [r.answer for r in b.rows] != [r.answer for r in c.rows]
    assert not {r.answer for r in a.rows} & {r.answer for r in a.eval_rows}


# ---- contract ----------------------------------------------------------------------------------


def test_builtins_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from rltrain.envs.loader import load_rltrain_environment as load\n"
        f"load('gsm8k', {{'data_dir': {str(_gsm8k_dir())!r}, 'num_examples': 2, 'eval_examples': 2}})\n"
        "load('reverse-text', {})\n"
        "env = load('reasoning-gym', {'num_examples': 2, 'eval_examples': 1})\n"
        "env.score(env.rows[0], '<answer>1</answer>')\n"
        "print('torch' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False"
