"""The environment tests' venvs (made once per machine, cached: tests/envs/conftest.py), for the kinds
that run environments in them."""

from tests.envs.conftest import classic_python, echo_scaffold, openenv_python  # noqa: F401
