"""Opening a run: its id and directory, record, lock, environments, env files and signal handling."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

from rltrain import checkpoint as ckpt
from rltrain.config import Config, EnvConfig, apply_overrides, parse_config
from rltrain.data import EnvSlot
from rltrain.distributed import Dist
from rltrain.envs.loader import load_rltrain_environment
from rltrain.envs.verifiers_v1 import load_v1
from rltrain.envs.workers import EnvSpec
from rltrain.record import RunRecord, atomic_write_text, truncate_jsonl, validate_run_id


class StopFlag:
    """SIGINT/SIGTERM ask the loop to stop at the next safe point; a second signal stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def load_env_files(paths: list[str], base: Path) -> list[str]:
    """KEY=VALUE lines into os.environ for the environment's code; returns the key names only."""
    keys = []
    for raw in paths:
        path = (base / raw).expanduser() if not Path(raw).is_absolute() else Path(raw)
        if not path.is_file():
            raise FileNotFoundError(f"env_files: {raw}: no such file")
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.removeprefix("export ").partition("=")
            os.environ[key.strip()] = value.strip().strip("'\"")
            keys.append(key.strip())
    return keys


def _entries(cfg: Config) -> list[EnvConfig]:
    return [*cfg.env, *(cfg.eval.env if cfg.eval is not None else [])]


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


def env_specs(cfg: Config) -> list[EnvSpec]:
    """How worker processes load the run's environments, training and eval (by the slots' names);
    verifiers environments run their own code."""
    specs: dict[str, EnvSpec] = {}
    for e in [*cfg.env, *eval_entries(cfg)]:
        if e.taskset is None and e.id is not None:
            spec = EnvSpec(e.label, e.id, e.args)
            if specs.setdefault(spec.name, spec) != spec:
                raise ValueError(f"env: two entries named {spec.name!r} differ; give one a `name`")
    return list(specs.values())


def add_import_paths(cfg: Config) -> None:
    """`[[env]] path`: importable here and in every subprocess (workers, harnesses, tool servers)."""
    for entry in _entries(cfg):
        if entry.path:  # (training and eval entries alike)
            path = str(Path(entry.path).expanduser().resolve())
            if not Path(path).is_dir():
                raise FileNotFoundError(f"env path: {entry.path}: no such directory")
            if path not in sys.path:
                sys.path.insert(0, path)
            parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
            os.environ["PYTHONPATH"] = os.pathsep.join([path, *[p for p in parts if p != path]])


def build_slots(cfg: Config, entries: Sequence[EnvConfig] | None = None) -> list[EnvSlot]:
    """The training environments (or `entries`, e.g. `[[eval.env]]`), loaded in this process."""
    add_import_paths(cfg)
    slots: list[EnvSlot] = []
    for entry in cfg.env if entries is None else entries:
        name = entry.label
        if any(s.name == name for s in slots):
            raise ValueError(f"env: two entries named {name!r}; give one a `name`")
        if entry.taskset is not None:
            env: Any = load_v1(entry.verifiers_config(), entry.renderer, entry.allow_bash)
        else:
            assert entry.id is not None
            env = load_rltrain_environment(entry.id, entry.args)
        slots.append(EnvSlot(name, env, entry.ratio))
    return slots


# Lock handles this process holds: closing one would release its run, so they live as long as the process
# (a later run in the same process, e.g. a resume, takes its run's handle over).
_HELD: dict[Path, IO[str]] = {}


def acquire_lock(run_dir: Path) -> IO[str]:
    """Hold `.lock` for the life of the process: one writer per run; the pid inside is for `runs cancel`."""
    path = (run_dir / ".lock").resolve()
    held = _HELD.pop(path, None)
    if held is not None:
        if path.exists() and os.path.samestat(os.fstat(held.fileno()), path.stat()):
            _HELD[path] = held
            return held
        held.close()  # the file was replaced (a copied run dir): lock the new one
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RuntimeError(f"run {run_dir.name} is being written by another process") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _HELD[path] = handle
    return handle


def create_run_dir(cfg: Config) -> tuple[Path, RunRecord]:
    """A new run directory with its config.json and a `queued` record (for `train` and `submit`)."""
    run_id = validate_run_id(cfg.run.id or new_run_id())
    run_dir = (Path(cfg.run.output_dir) / run_id).resolve()
    if (run_dir / "run.json").exists():
        raise FileExistsError(f"run.id: {run_id} already exists in {cfg.run.output_dir} (use --resume)")
    run_dir.mkdir(parents=True, exist_ok=True)
    env_label = "+".join(e.label for e in cfg.env)
    dump = cfg.model_dump(mode="json")
    write_config(run_dir, dump)  # before run.json: a record never exists without its config
    record = RunRecord.create(
        run_dir,
        run_id=run_id,
        base_model=cfg.model,
        environment=env_label,
        config=dump,
        team_id=cfg.run.team_id,
        status="queued",
    )
    return run_dir, record


def open_run_dir(cfg: Config, resume: Path | None, dist: Dist) -> tuple[Path, RunRecord]:
    """The main rank creates (or reopens) the run; the others join the directory it chose."""
    if dist.is_main:
        if resume is not None:
            run_dir = resume.resolve()
            if not (run_dir / "run.json").is_file():
                raise FileNotFoundError(f"--resume {resume}: no run.json there")
            acquire_lock(run_dir)
            record = RunRecord.load(run_dir)
            write_config(run_dir, cfg.model_dump(mode="json"))  # overrides given to --resume stick
        else:
            run_dir, record = create_run_dir(cfg)
            acquire_lock(run_dir)
    chosen = Path(dist.all_gather(str(run_dir) if dist.is_main else "")[0])
    if not dist.is_main:
        if not (chosen / "run.json").is_file():  # another node, without the main rank's filesystem
            raise FileNotFoundError(
                f"rank {dist.rank} cannot see the run directory {chosen}: with several machines "
                "run.output_dir must be on a filesystem every node shares"
            )
        run_dir, record = chosen, RunRecord.load(chosen)
    dist.set_run_dir(run_dir)
    return run_dir, record


def write_config(run_dir: Path, dump: dict[str, Any]) -> None:
    """Atomic: a kill in the middle of a plain write_text leaves an empty config and an unresumable run."""
    atomic_write_text(run_dir / "config.json", json.dumps(dump, indent=2))


def latest_for_resume(run_dir: Path, resume: Path | None, dist: Dist) -> Path | None:
    latest = ckpt.latest_checkpoint(run_dir) if resume is not None else None
    if resume is not None and latest is None and dist.is_main:
        # killed before its first complete checkpoint: the run starts over, so drop the dead rows
        truncate_jsonl(run_dir / "metrics.jsonl", 0)
    return latest


def stored_config(run_dir: Path, overrides: list[str] | None = None) -> Config:
    """The config a run was started with (config.json), with command-line overrides applied."""
    return parse_config(apply_overrides(json.loads((run_dir / "config.json").read_text()), overrides or []))
