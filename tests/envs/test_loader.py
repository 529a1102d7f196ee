"""Whatever an environment raises at import or load is one line naming it and the stage; the traceback
stays chained for error.log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rltrain.envs.loader import EnvironmentLoadError, load_rltrain_environment

BROKEN = {
    "syntax": ("def load_environment(:\n", "import raised SyntaxError: "),
    "load": (
        "def load_environment():\n    raise RuntimeError('no data')\n",
        "load_environment raised RuntimeError: no data",
    ),
    "keyerror": (
        "def load_environment():\n    return {}['rows']\n",
        "load_environment raised KeyError: 'rows'",
    ),
    "classic": (
        "import verifiers as vf\nrubric = vf.Rubric()\ndef load_environment():\n    return None\n",
        "raised AttributeError: module 'verifiers' has no attribute 'Rubric'; it is a classic verifiers",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_an_environment_that_raises_is_one_line_naming_the_stage(case: str, tmp_path: Path) -> None:
    code, expected = BROKEN[case]
    path = tmp_path / f"{case}_env.py"
    path.write_text(code)
    with pytest.raises(EnvironmentLoadError) as caught:
        load_rltrain_environment(str(path))
    message = str(caught.value)
    assert message.startswith(f"environment '{path}': ") and expected in message and "\n" not in message
    assert caught.value.__cause__ is not None  # the traceback error.log shows


def test_the_console_says_one_line_and_error_log_has_the_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad_env.py"
    path.write_text(
        "def load_environment():\n    return helper()\n\ndef helper():\n    raise RuntimeError('boom')\n"
    )
    config = tmp_path / "run.toml"
    runs = tmp_path / "runs"
    config.write_text(
        f'model = "builtin:tiny"\nmax_steps = 1\nbatch_size = 2\nrollouts_per_example = 2\n'
        f'[[env]]\nid = "{path}"\n[run]\noutput_dir = "{runs}"\nprogress = false\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "rltrain", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"rltrain: run failed: environment '{path}': load_environment raised RuntimeError: boom"
    assert "Traceback" not in done.stderr
    log = next(runs.glob("*/error.log")).read_text()
    assert "in helper" in log and "raise RuntimeError('boom')" in log
