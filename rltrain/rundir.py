"""A run's directory: its id, creation (config.json, then a `queued` record), the writer's lock, the
stored config, and the `env_files` a run loads. Imports no torch: `submit`, `runs` and the worker use it."""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from rltrain.fsutil import atomic_write_text, try_flock
from rltrain.record import RunRecord, validate_run_id

if TYPE_CHECKING:
    from rltrain.config import Config
    from rltrain.distributed import Dist


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def env_file_paths(paths: list[str], base: Path) -> list[Path]:
    """`env_files` as `train` reads them: relative to the config's directory; each must exist."""
    out = [base / Path(raw).expanduser() for raw in paths]  # an absolute path stays as is
    for raw, path in zip(paths, out, strict=True):
        if not path.is_file():
            raise FileNotFoundError(f"env_files: {raw}: no such file")
    return out


def load_env_files(paths: list[str], base: Path) -> list[str]:
    """KEY=VALUE lines (python-dotenv's syntax) into os.environ for the environment's code; returns the
    key names only (values are never recorded)."""
    from dotenv import dotenv_values

    keys = []
    for path in env_file_paths(paths, base):
        for key, value in dotenv_values(path, interpolate=False).items():
            os.environ[key] = value or ""
            keys.append(key)
    return keys


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
    if not try_flock(handle):
        handle.close()
        raise RuntimeError(f"run {run_dir.name} is being written by another process")
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


def stored_config(run_dir: Path, overrides: list[str] | None = None) -> Config:
    """The config a run was started with (config.json), with command-line overrides applied."""
    from rltrain.config import apply_overrides, parse_config  # pydantic: not for `runs`

    return parse_config(apply_overrides(json.loads((run_dir / "config.json").read_text()), overrides or []))
