"""Resolve an `[[env]] id` to a module and build its environment with `load_environment(**args)`.

Resolution order: a `.py` file path; a built-in in the repository's `environments/` folder; an
installed package's entry point in group `rltrain.environments`; an importable module; an
Environments Hub slug `owner/name[@version]` (module `name` with `-` → `_`).
"""

from __future__ import annotations

import importlib
import importlib.util
import signal
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from rltrain.envs.base import Environment
from rltrain.envs.classic import classic_base

# The repository's environments/ folder: inside the package once installed from a wheel
# (pyproject.toml maps it to rltrain.environments), beside it in a checkout or an editable install.
_HERE = Path(__file__).resolve()
BUILTIN_DIR = next(
    (d for d in (_HERE.parents[1] / "environments", _HERE.parents[2] / "environments") if d.is_dir()),
    _HERE.parents[2] / "environments",
)
ENTRY_POINT_GROUP = "rltrain.environments"


class EnvironmentLoadError(RuntimeError):
    pass


CLASSIC_HINT = (
    "it is a classic verifiers (0.1) environment: give it its own interpreter: `python -m rltrain envs "
    "venv NAME -- 'verifiers<0.2' PACKAGE` makes one and prints the line for its [[env]]: "
    'python = ".../bin/python"'
)


def one_line(err: BaseException) -> str:
    """`Type: message` on one line, with the import error under a "not found" (verifiers' plugin loaders
    say "not found" for a module that exists but fails to import)."""
    text = " / ".join(line.strip() for line in str(err).splitlines() if line.strip())[:400]
    out = f"{type(err).__name__}: {text}" if text else type(err).__name__
    cause = err.__cause__
    if isinstance(cause, ImportError) and str(cause) and str(cause) not in text:
        out += f" (the import failed: {type(cause).__name__}: {cause})"
    if isinstance(err, AttributeError) and "module 'verifiers' has no attribute" in text:
        out += f"; {CLASSIC_HINT}"
    return out


def raised(env_id: str, stage: str, err: BaseException) -> EnvironmentLoadError:
    """One line naming the environment and the stage; `raise raised(...) from err` keeps the traceback."""
    return EnvironmentLoadError(f"environment {env_id!r}: {stage} raised {one_line(err)}")


def builtin_names() -> list[str]:
    if not BUILTIN_DIR.is_dir():
        return []
    return sorted(p.stem.replace("_", "-") for p in BUILTIN_DIR.glob("*.py") if not p.name.startswith("_"))


def _module_from_file(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise EnvironmentLoadError(f"environment {path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module


def _entry_point(name: str) -> ModuleType | None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in (name, name.replace("-", "_")):
            loaded = ep.load()
            return loaded if isinstance(loaded, ModuleType) else importlib.import_module(ep.module)
    return None


def resolve_module(env_id: str) -> ModuleType:
    try:
        return _resolve_module(env_id)
    except EnvironmentLoadError:
        raise
    except Exception as err:  # SyntaxError and any Exception of the environment's own import
        raise raised(env_id, "import", err) from err


def _resolve_module(env_id: str) -> ModuleType:
    if env_id.endswith(".py") or "/" in env_id and Path(env_id).exists():
        path = Path(env_id).expanduser().resolve()
        if not path.is_file():
            raise EnvironmentLoadError(f"environment {env_id}: no such file")
        return _module_from_file(path, f"rltrain_env_{path.stem}")
    slug_name = env_id.split("/")[-1].split("@")[0]
    builtin = BUILTIN_DIR / f"{slug_name.replace('-', '_')}.py"
    if builtin.is_file() and ("/" not in env_id or env_id.startswith("primeintellect/")):
        return _module_from_file(builtin, f"rltrain_builtin_{builtin.stem}")
    found = _entry_point(slug_name)
    if found is not None:
        return found
    module_name = slug_name.replace("-", "_")
    if importlib.util.find_spec(module_name) is None:
        hint = f"pip install {slug_name}" if "/" not in env_id else f"prime env install {env_id}"
        raise EnvironmentLoadError(
            f"environment {env_id!r}: no built-in, entry point or installed module {module_name!r} "
            f"(install it with `{hint}` or `pip install -e PATH`, or give a .py file path)"
        )
    return importlib.import_module(module_name)


def load_environment(env_id: str, args: dict[str, Any] | None = None) -> Any:
    """Build the environment; returns whatever `load_environment` returned (checked by the caller)."""
    module = resolve_module(env_id)
    factory = getattr(module, "load_environment", None)
    if not callable(factory):
        raise EnvironmentLoadError(f"environment {env_id!r}: module has no load_environment(**args)")
    # Some environments (classic verifiers) install their own SIGINT/SIGTERM handlers on construction;
    # the run's handlers (cancel with a final checkpoint) must survive that.
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        env = factory(**(args or {}))
    except Exception as err:  # whatever the environment's code raises: one line, the traceback chained
        raise raised(env_id, "load_environment", err) from err
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)
    return env


def load_rltrain_environment(env_id: str, args: dict[str, Any] | None = None) -> Environment:
    env = load_environment(env_id, args)
    base = classic_base(env)
    if not isinstance(env, Environment) and base is not None:
        what = f"a {base} ({type(env).__name__})"
        raise EnvironmentLoadError(f"environment {env_id!r}: load_environment gave {what}; {CLASSIC_HINT}")
    if not isinstance(env, Environment):
        raise EnvironmentLoadError(
            f"environment {env_id!r}: load_environment returned {type(env).__name__}, "
            "expected rltrain.Environment or a verifiers environment"
        )
    return env
