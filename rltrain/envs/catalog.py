"""What `python -m rltrain envs` lists: the environments this machine has, each with the interpreter it
would run in. rltrain's built-ins and entry points; verifiers 0.4 tasksets (built in, or packages that
need verifiers 0.4) run in the trainer's venv; classic verifiers (0.1.x) environments and OpenEnv
packages run in a venv of their own (`envs venv`, then `[[env]] python = ...` or `openenv = {path,
python}`). The trainer's venv and every venv `envs venv` made are read from their packages' metadata:
nothing is imported, no other interpreter is started.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import Distribution, distributions
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import Version

from rltrain.envs.loader import ENTRY_POINT_GROUP, builtin_names
from rltrain.envs.venvs import MARKER, cache_dir

TRAINER = "the trainer's"
OWN_VENV = "its own: python -m rltrain envs venv NAME -- 'verifiers<0.2' PACKAGE"
RUNTIMES = {"verifiers", "openenv", "openenv-core", "rltrain"}  # the frameworks, not environments


@dataclass(frozen=True)
class Found:
    name: str
    what: str
    python: str  # the interpreter it would run in, or how to make one


def _name(dist: Distribution) -> str:
    return str(dist.metadata["Name"]).lower().replace("_", "-")


def _needs(dist: Distribution) -> dict[str, Requirement]:
    """The distribution's own requirements (not its extras'), by normalised name."""
    out = {}
    for text in dist.requires or []:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is None or "extra" not in str(req.marker):
            out[req.name.lower().replace("_", "-")] = req
    return out


def _classic(req: Requirement, installed: str | None) -> bool:
    """Built against verifiers 0.1.x: its pin takes 0.1 and not 0.4, or else the venv it is in holds 0.1."""
    old, new = (req.specifier.contains(v, prereleases=True) for v in ("0.1.14", "0.4.0"))
    if old != new:
        return old
    return installed is not None and Version(installed) < Version("0.2")


def _packages(dists: Iterable[Distribution], python: str, trainer: bool) -> list[Found]:
    dists = list(dists)
    versions = {_name(d): d.version for d in dists}
    out = []
    for dist in dists:
        name, needs = _name(dist), _needs(dist)
        label = f"{name} {dist.version}"
        for ep in dist.entry_points.select(group=ENTRY_POINT_GROUP):
            out.append(Found(ep.name, f"entry point ({ep.value})", python))
        if name in RUNTIMES:
            continue
        if "openenv" in needs or "openenv-core" in needs:
            out.append(Found(label, "OpenEnv package: openenv = {path, python}", python))
        elif "verifiers" in needs and _classic(needs["verifiers"], versions.get("verifiers")):
            out.append(Found(label, "classic verifiers (0.1.x) environment", OWN_VENV if trainer else python))
        elif "verifiers" in needs:
            where = TRAINER if trainer else "the trainer's venv: install it there"
            out.append(Found(label, "verifiers 0.4 taskset or environment", where))
    return out


def _v1_tasksets() -> list[Found]:
    """The tasksets verifiers 0.4 ships (`taskset = {id = NAME}`), from its installed files."""
    try:
        dist = next(d for d in distributions(name="verifiers"))
    except StopIteration:
        return []
    folder = Path(str(dist.locate_file("verifiers/v1/tasksets")))
    if not folder.is_dir():
        return []
    names = sorted(p.name for p in folder.iterdir() if (p / "__init__.py").is_file())
    return [Found(n, f"verifiers {dist.version} taskset (built in)", TRAINER) for n in names]


def own_venvs() -> list[tuple[dict[str, Any], Path]]:
    """The venvs `envs venv` made (their marker's record, their folder)."""
    root = cache_dir()
    found = sorted(root.glob(f"*/{MARKER}")) if root.is_dir() else []
    return [(json.loads(marker.read_text()), marker.parent) for marker in found]


def catalog() -> list[Found]:
    out = [Found(n, "built-in", TRAINER) for n in builtin_names()]
    out += _v1_tasksets()
    out += _packages(distributions(), TRAINER, trainer=True)
    for record, path in own_venvs():
        python = str(path / "bin" / "python")
        sites = [str(p) for p in path.glob("lib/python*/site-packages")]
        out += _packages(distributions(path=sites), python, trainer=False)
        packages = " ".join(str(p) for p in record.get("packages") or []) or "nothing"
        out.append(Found(f"venv {record.get('name', path.name)}", f"holds {packages}", python))
    return out


def print_catalog() -> None:
    print(f"{'NAME':28} {'WHAT':48} PYTHON (the trainer's: {sys.executable})")
    for found in catalog():
        print(f"{found.name:28} {found.what:48} {found.python}")
