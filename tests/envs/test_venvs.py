"""`envs venv`: a venv per package list, cached by key, reused at once, never left half-made."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from rltrain.__main__ import main
from rltrain.envs.venvs import MARKER, ensure_venv, venv_key


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RLTRAIN_VENV_CACHE", str(tmp_path / "venvs"))
    return tmp_path / "venvs"


def _wheel(tmp_path: Path) -> Path:
    """A one-module wheel, written by hand: pip installs it with no registry and no build step."""
    path = tmp_path / "hello_env-0.1-py3-none-any.whl"
    info = "hello_env-0.1.dist-info"
    files = {
        "hello_env.py": "WORD = 'hello'\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: hello-env\nVersion: 0.1\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as whl:
        for name, text in files.items():
            whl.writestr(name, text)
        whl.writestr(f"{info}/RECORD", "".join(f"{n},,\n" for n in [*files, f"{info}/RECORD"]))
    return path


def test_a_venv_is_made_once_then_reused_and_the_cli_prints_the_env_line(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    offline = ["--no-index", str(_wheel(tmp_path))]  # no registry needed
    assert main(["envs", "venv", "hello", "--", *offline]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith('python = "') and line.endswith('/bin/python"')
    python = line.split('"')[1]
    word = subprocess.run(
        [python, "-c", "import hello_env; print(hello_env.WORD)"], capture_output=True, text=True
    )
    assert word.stdout.strip() == "hello"
    again = ensure_venv("hello", offline)
    assert again.cached and str(again.python) == python and (again.path / MARKER).is_file()
    assert venv_key(["a"], "3.11.7") != venv_key(["b"], "3.11.7") != venv_key(["b"], "3.12.1")


def test_a_failed_install_is_one_error_and_leaves_nothing(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["envs", "venv", "nope", "--", "--no-index", "no-such-package-rltrain-test"]) == 1
    err = capsys.readouterr().err
    assert "pip install failed" in err  # pip or uv pip, whichever built it
    assert err.startswith("rltrain: envs venv: ") and "no-such-package-rltrain-test" in err
    assert not [p for p in cache.iterdir() if p.is_dir()]  # no half-made venv to be mistaken for a good one
    with pytest.raises(SystemExit):
        main(["envs", "venv", "nothing"])  # no packages: usage, not a bare venv
