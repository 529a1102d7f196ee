"""The environment worker for another interpreter: an `[[env]]` whose `python` is its own venv's.

The trainer's pool starts it by path, `OTHER_PYTHON /path/to/rltrain/envs/foreign_worker.py READ_FD WRITE_FD`,
and drives it with the pipe protocol of envs/workers.py, unchanged: (env name, method, args) in, ("ok",
value) or ("error", kind, line, traceback) out. One method is added, `describe`: the environment's rows,
reward functions and turn structure as plain data, which the trainer reads once at load.

Nothing needs to be installed in that interpreter. This file imports the standard library and rltrain's
own standard-library-only modules (rltrain/__init__, envs/base, envs/workers, envs/loader, envs/classic),
loaded from beside this file as the `rltrain` package, never from the trainer's site-packages: no torch,
vLLM or pydantic, and the venv's own verifiers is the one its environments get. So a Python >= 3.11 venv
with the environment's packages is enough (tests/envs/test_foreign_worker.py checks a bare venv).

It loads an rltrain environment module (`load_environment` returning `rltrain.Environment`) or a classic
verifiers 0.1 environment, recognised by its base class (envs/classic.py).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any


def _bootstrap() -> None:
    """Make this file's rltrain package importable, and nothing else of the trainer's."""
    here = Path(__file__).resolve()
    if sys.path and Path(sys.path[0] or ".").resolve() == here.parent:
        sys.path.pop(0)  # the script's folder would shadow modules named base, workers, loader
    package = here.parents[1]
    loaded = sys.modules.get("rltrain")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve().parent == package:
        return
    spec = importlib.util.spec_from_file_location(
        "rltrain", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["rltrain"] = module  # before any environment's `import rltrain` finds another one
    spec.loader.exec_module(module)


class NativeEnv:
    """An rltrain Environment, with `describe` added (its other methods are the Environment's)."""

    def __init__(self, env: Any) -> None:
        self.env = env

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def describe(self) -> dict[str, Any]:
        env = self.env

        def rows(items: list[Any] | None) -> list[dict[str, Any]] | None:
            return (
                [{"prompt": r.prompt, "answer": r.answer, "info": r.info} for r in items] if items else None
            )

        return {
            "kind": "rltrain",
            "rows": rows(env.rows),
            "eval_rows": rows(env.eval_rows),
            "reward_names": env.reward_names(),
            "reward_weights": list(env.reward_weights),
            "group": [env.is_group_func(i) for i in range(len(env.reward_funcs))],
            "multi_turn": env.multi_turn,
            "max_turns": env.max_turns,
            "tools": env.tool_schemas() if env.tools else [],  # transformers, in that venv
            "env_response": env.env_response is not None,
        }


def load(env_id: str, args: dict[str, Any]) -> Any:
    """The environment `env_id` builds, behind the worker contract; raises EnvironmentLoadError."""
    from rltrain.envs.base import Environment
    from rltrain.envs.classic import ClassicEnv, classic_base
    from rltrain.envs.loader import EnvironmentLoadError, load_environment

    env = load_environment(env_id, args)
    if isinstance(env, Environment):
        return NativeEnv(env)
    if classic_base(env) is not None:
        return ClassicEnv(env)
    raise EnvironmentLoadError(
        f"environment {env_id!r}: load_environment returned {type(env).__name__}, expected rltrain."
        "Environment or a classic verifiers environment (SingleTurnEnv, MultiTurnEnv, ToolEnv)"
    )


def main() -> None:
    _bootstrap()
    from rltrain.envs.workers import serve

    serve(int(sys.argv[1]), int(sys.argv[2]), load)


if __name__ == "__main__":
    main()
