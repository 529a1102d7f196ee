"""Venvs of other interpreters for the environment tests, made once per machine and cached
(~/.cache/rltrain/venvs, rltrain/envs/venvs.py): the first run installs them, later runs reuse them."""

from __future__ import annotations

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
