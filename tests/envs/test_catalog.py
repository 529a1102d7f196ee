"""`python -m rltrain envs`: the environments of the trainer's venv and of every venv `envs venv` made,
each with the interpreter it would run in, read from package metadata."""

from __future__ import annotations

import json
from importlib.metadata import distributions
from pathlib import Path

import pytest

from rltrain.envs.catalog import OWN_VENV, TRAINER, Found, _packages, catalog
from rltrain.envs.venvs import MARKER

PACKAGES = {
    "korrel": ("0.3", ["verifiers<0.2"], ""),  # a classic environment, by its pin
    "echo_pkg": ("0.1", ["openenv-core>=0.2", "numpy; extra == 'dev'"], ""),
    "count_v1": ("1.0", ["verifiers>=0.4"], ""),
    "mine": ("0.2", [], "[rltrain.environments]\nmy-env = mine.env\n"),
    "verifiers": ("0.1.14", [], ""),
}


def _site(root: Path, packages: dict[str, tuple[str, list[str], str]]) -> Path:
    site = root / "lib" / "python3.11" / "site-packages"
    for name, (version, requires, eps) in packages.items():
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        lines = [f"Name: {name}", f"Version: {version}", *(f"Requires-Dist: {r}" for r in requires)]
        (info / "METADATA").write_text("Metadata-Version: 2.1\n" + "\n".join(lines) + "\n")
        if eps:
            (info / "entry_points.txt").write_text(eps)
    return site


def test_a_venv_of_envs_venv_lists_its_environments_with_its_python(tmp_path: Path, monkeypatch) -> None:
    venv = tmp_path / "venvs" / "korrel-1a2b"
    _site(venv, PACKAGES)
    (venv / MARKER).write_text(json.dumps({"name": "korrel", "packages": ["korrel", "verifiers<0.2"]}))
    monkeypatch.setenv("RLTRAIN_VENV_CACHE", str(tmp_path / "venvs"))
    found = {f.name: f for f in catalog()}
    python = str(venv / "bin" / "python")
    assert found["digits"] == Found("digits", "built-in", TRAINER)
    assert found["korrel 0.3"] == Found("korrel 0.3", "classic verifiers (0.1.x) environment", python)
    assert found["echo-pkg 0.1"].what.startswith("OpenEnv package") and found["echo-pkg 0.1"].python == python
    assert found["count-v1 1.0"].python == "the trainer's venv: install it there"  # 0.4 runs in the trainer
    assert found["my-env"] == Found("my-env", "entry point (mine.env)", python)
    assert found["venv korrel"].what == "holds korrel verifiers<0.2" and "verifiers 0.1.14" not in found
    if any(d.metadata["Name"] == "verifiers" and d.version.startswith("0.4") for d in distributions()):
        assert found["openenv"].what.startswith("verifiers 0.4") and found["openenv"].python == TRAINER


@pytest.mark.parametrize(("requires", "expected"), [(["verifiers<0.2"], OWN_VENV), (["verifiers"], TRAINER)])
def test_in_the_trainers_venv_a_classic_environment_needs_its_own(
    tmp_path: Path, requires: list[str], expected: str
) -> None:
    site = _site(tmp_path, {"pkg": ("1.0", requires, ""), "verifiers": ("0.4.0", [], "")})
    [found] = _packages(distributions(path=[str(site)]), TRAINER, trainer=True)
    assert found.python == expected
