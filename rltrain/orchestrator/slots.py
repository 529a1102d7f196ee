"""The run's environments, loaded in this process by their kinds (rltrain/kinds/), under their names;
and how the worker processes load them (`worker_specs`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rltrain import kinds
from rltrain.config import Config, EnvConfig
from rltrain.envs.workers import EnvSpec
from rltrain.kinds.base import EnvSlot


def eval_entries(cfg: Config) -> list[EnvConfig]:
    """`[[eval.env]]`, each named apart from a training environment of the same name but other args
    (`digits@eval`): the name is how worker processes find the environment to load."""
    if cfg.eval is None:
        return []
    train = {(e.label, e.id, repr(e.args)) for e in cfg.env}
    names = {e.label for e in cfg.env}
    out: list[EnvConfig] = []
    for e in cfg.eval.env:
        clash = e.label in names and (e.label, e.id, repr(e.args)) not in train
        out.append(e.model_copy(update={"name": f"{e.label}@eval"}) if clash and not e.name else e)
    return out


def add_import_paths(entries: Sequence[EnvConfig]) -> None:
    """`[[env]] path`: importable here and in every subprocess (workers, harnesses, tool servers)."""
    for entry in entries:
        if entry.path:
            path = str(Path(entry.path).expanduser().resolve())
            if not Path(path).is_dir():
                raise FileNotFoundError(f"env path: {entry.path}: no such directory")
            if path not in sys.path:
                sys.path.insert(0, path)
            parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
            os.environ["PYTHONPATH"] = os.pathsep.join([path, *[p for p in parts if p != path]])


def build_slots(cfg: Config, entries: Sequence[EnvConfig] | None = None) -> list[EnvSlot]:
    """The training environments (or `entries`, e.g. `[[eval.env]]`), loaded in this process."""
    add_import_paths([*cfg.env, *(cfg.eval.env if cfg.eval is not None else [])])
    slots: list[EnvSlot] = []
    for entry in cfg.env if entries is None else entries:
        name = entry.label
        if any(s.name == name for s in slots):
            raise ValueError(f"env: two entries named {name!r}; give one a `name`")
        slots.append(EnvSlot(name, kinds.load(entry), entry.ratio))
    return slots


def worker_specs(slots: Sequence[EnvSlot]) -> list[EnvSpec]:
    """How worker processes load the run's environments (training and eval) by the slots' names."""
    specs: dict[str, EnvSpec] = {}
    for slot in slots:
        spec = slot.env.worker_spec(slot.name)
        if spec is not None and specs.setdefault(spec.name, spec) != spec:
            raise ValueError(f"env: two entries named {spec.name!r} differ; give one a `name`")
    return list(specs.values())
