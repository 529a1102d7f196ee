"""Venvs of other interpreters for the environment tests, made once per machine and cached
(~/.cache/rltrain/venvs, rltrain/envs/venvs.py): the first run installs them, later runs reuse them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rltrain.envs.venvs import ensure_venv

CLASSIC_VERIFIERS = ["verifiers==0.1.14"]
OPENENV = ["openenv==0.10.0"]


@pytest.fixture(scope="session")
def bare_python() -> str:
    """A venv with nothing installed: what the foreign worker needs of an interpreter."""
    return str(ensure_venv("bare", []).python)


@pytest.fixture(scope="session")
def classic_python() -> str:
    """verifiers 0.1.14 (the classic API), which cannot share the trainer's venv (verifiers 0.4)."""
    return str(ensure_venv("verifiers-classic", CLASSIC_VERIFIERS).python)


@pytest.fixture(scope="session")
def openenv_python() -> str:
    """openenv 0.10 (its servers), which cannot share the trainer's venv (mcp < 2 against mcp 2.0)."""
    return str(ensure_venv("openenv", OPENENV).python)


@pytest.fixture(scope="session")
def echo_scaffold(openenv_python: str) -> Path:
    """What `openenv init echo_env` writes, kept beside the venv that made it (same openenv version)."""
    home = Path(openenv_python).parents[1] / "scaffolds"
    if not (home / "echo_env" / "openenv.yaml").is_file():
        home.mkdir(exist_ok=True)
        cli = Path(openenv_python).parent / "openenv"
        subprocess.run([str(cli), "init", "echo_env"], cwd=home, check=True, capture_output=True)
    return home / "echo_env"
