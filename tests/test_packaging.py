"""Packaging: a wheel carries the built-in environments, and its metadata the Python floor the code
needs (tomllib, verifiers 0.4: 3.11)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

from setuptools import find_namespace_packages

REPO = Path(__file__).resolve().parents[1]


def test_the_listed_packages_are_every_package_plus_the_environments() -> None:
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    # namespace packages too: rltrain/schema holds only data, and an unlisted one warns at every install
    found = find_namespace_packages(
        where=str(REPO), include=["rltrain", "rltrain.*"], exclude=["*.__pycache__"]
    )
    assert sorted(listed) == sorted([*found, "rltrain.environments"])


def test_a_wheel_installed_in_a_fresh_venv_finds_its_built_in_environments(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("rltrain-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "rltrain/environments/digits.py" in names and "rltrain/environments/README.md" in names
    assert "rltrain/schema/training-run.schema.json" in names and "rltrain/py.typed" in names
    assert "rltrain/serve/static/uPlot.iife.min.js" in names and "rltrain/serve/static/app.js" in names
    assert "is absent from the `packages` configuration" not in build.stderr
    assert "Requires-Python: >=3.11" in metadata

    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)]
    subprocess.run(install, check=True, timeout=300, capture_output=True)
    # the dependencies come from this environment's site-packages, appended after the fresh venv's
    # own (a plain path line: this environment's editable rltrain hook is not processed)
    site = Path(
        subprocess.check_output(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    check = (
        "import rltrain, rltrain.envs.loader as L; "
        "assert '/fresh/' in rltrain.__file__, rltrain.__file__; "
        "assert 'digits' in L.builtin_names() and 'guess-number' in L.builtin_names(), L.builtin_names(); "
        "env = L.load_rltrain_environment('digits'); print(len(env.rows)); "
        "from rltrain.record import load_schema; assert load_schema()['title']"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [str(py), "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    listed = subprocess.run(
        [str(py), "-m", "rltrain", "envs"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0 and "digits" in listed.stdout and "shout" in listed.stdout, listed.stderr
