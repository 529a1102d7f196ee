"""`python -m rltrain envs venv NAME -- PACKAGE...`: a venv for an environment whose packages cannot share
the trainer's (a classic verifiers 0.1 package, an OpenEnv server), cached by what it holds.

The venv is `~/.cache/rltrain/venvs/NAME-KEY` (under `$XDG_CACHE_HOME` if set; `$RLTRAIN_VENV_CACHE`
replaces the folder), KEY a hash of the interpreter version and the package list, so a second call (a
test run, CI with a cached home) reuses it at once. It is made with uv where uv is installed (`uv venv`
+ `uv pip install`), else with `python -m venv` and pip.
rltrain's environment worker needs nothing installed there: the trainer runs it by path
(envs/foreign_worker.py). A build holds a lock, and the venv counts only once its marker is written, so an
interrupted build is redone and two builders never share a half-made venv.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MARKER = "rltrain-venv.json"


def cache_dir() -> Path:
    """Not under RLTRAIN_CACHE, which the tests point into the checkout: a fresh clone reuses these."""
    if os.environ.get("RLTRAIN_VENV_CACHE"):
        return Path(os.environ["RLTRAIN_VENV_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "rltrain" / "venvs"


@dataclass(frozen=True)
class Venv:
    path: Path
    cached: bool  # found ready, nothing built
    seconds: float  # this call's time (creation and install, or the lookup)

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def _version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _pinned(packages: list[str]) -> list[str]:
    """Local paths as absolute ones: the key and pip then mean the same folder from any cwd."""
    out = []
    for p in packages:
        local = not p.startswith("-") and (p.startswith((".", "/", "~")) or os.sep in p) and "://" not in p
        out.append(str(Path(p).expanduser().resolve()) if local and Path(p).expanduser().exists() else p)
    return out


def venv_key(packages: list[str], python_version: str) -> str:
    text = json.dumps({"python": python_version, "packages": packages})
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-12:]
        raise RuntimeError(f"{what} failed (exit {done.returncode}): " + "\n".join(tail))


def _uv() -> str | None:
    """uv on PATH, or beside this interpreter (`pip install uv` into the trainer's venv is enough)."""
    beside = Path(sys.executable).parent / "uv"
    return shutil.which("uv") or (str(beside) if beside.is_file() else None)


def _build(path: Path, python: str, packages: list[str]) -> str:
    uv = _uv()
    if uv:  # --seed: pip in the venv too, as `python -m venv` gives
        _run([uv, "venv", "--quiet", "--seed", "--python", python, str(path)], "uv venv")
        if packages:  # no --compile-bytecode: measured 197 s against 34 s, for a first import ~7 s sooner
            into = ["--python", str(path / "bin" / "python")]
            _run([uv, "pip", "install", "--quiet", *into, *packages], "uv pip install")
        return "uv"
    _run([python, "-m", "venv", str(path)], "python -m venv")
    if packages:
        _run([str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", *packages], "pip install")
    return "pip"


def ensure_venv(name: str, packages: list[str], python: str | None = None, rebuild: bool = False) -> Venv:
    """The venv NAME holding `packages` (pip requirement strings or options), made if not cached."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"envs venv: {name!r} is not a plain name")
    start = time.perf_counter()
    python = python or sys.executable
    packages = _pinned(packages)
    path = cache_dir() / f"{name}-{venv_key(packages, _version(python))}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another builder of the same venv: wait, then reuse its venv
        if (path / MARKER).is_file() and not rebuild:
            return Venv(path, True, time.perf_counter() - start)
        if path.exists():
            shutil.rmtree(path)  # half-made (interrupted) or asked to rebuild
        try:
            tool = _build(path, python, packages)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        seconds = time.perf_counter() - start
        record = {
            "name": name,
            "packages": packages,
            "python": python,
            "tool": tool,
            "build_s": round(seconds, 1),
        }
        (path / MARKER).write_text(json.dumps(record, indent=2))
    return Venv(path, False, seconds)


def cmd_venv(argv: list[str]) -> int:
    """`envs venv NAME [--python P] [--rebuild] -- PACKAGE...`; prints the [[env]] line to use."""
    parser = argparse.ArgumentParser(
        prog="python -m rltrain envs venv",
        usage="python -m rltrain envs venv NAME [--python P] [--rebuild] -- PACKAGE...",
        description="Make (or reuse) a venv for an environment's packages; prints the [[env]] python line.",
        epilog="Everything after -- goes to pip: requirements, paths, or options such as --index-url.",
    )
    parser.add_argument("name", help="a name for the venv (the cache keeps one per package list)")
    parser.add_argument("--python", help="the interpreter to base it on (default: this one)")
    parser.add_argument("--rebuild", action="store_true", help="build it again even if cached")
    own, packages = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = parser.parse_args(own)
    if not packages:
        parser.error("give the packages after --, e.g. envs venv my-env -- 'verifiers==0.1.14' my-env-pkg")
    try:
        venv = ensure_venv(args.name, packages, args.python, args.rebuild)
    except (RuntimeError, ValueError, OSError, subprocess.CalledProcessError) as err:
        print(f"rltrain: envs venv: {err}", file=sys.stderr)
        return 1
    how = "cached" if venv.cached else f"made in {venv.seconds:.0f}s"
    print(f"# {venv.path} ({how}); in the [[env]] entry:", file=sys.stderr)
    print(f'python = "{venv.python}"')
    return 0
