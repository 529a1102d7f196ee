"""What an environment's own venv costs (issue 26): `envs venv` with pip and with uv, on a fresh cache
(what a clean CI machine pays once) and cached (every later run), plus the first import in the new venv
(pip compiles bytecode at install, uv leaves it to the first import).

The two tools run in turn (pip, uv, pip, uv, ...) into a fresh temporary venv cache each time, with the
download caches off (PIP_NO_CACHE_DIR, UV_NO_CACHE): a clean machine's cost. uv must be installed
beside this interpreter (`pip install uv`) or on PATH.

    .venv/bin/python scripts/bench_venvs.py [--rounds 2] [--only verifiers-classic]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rltrain.envs import venvs  # noqa: E402

VENVS = {  # what the default test suite makes (tests/envs/conftest.py), and what its first use imports
    "verifiers-classic": (["verifiers==0.1.14"], "import verifiers, datasets"),
    "openenv": (["openenv==0.10.0"], "import openenv.core.env_server.http_server"),
}


def _import_s(python: Path, code: str) -> float:
    start = time.perf_counter()
    subprocess.run([str(python), "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def one(name: str, tool: str) -> dict[str, float]:
    packages, first_use = VENVS[name]
    uv = venvs._uv() if tool == "uv" else None
    if tool == "uv" and uv is None:
        raise SystemExit("uv is not installed beside this interpreter or on PATH: pip install uv")
    with (
        tempfile.TemporaryDirectory(prefix="bench-venvs-") as cache,
        mock.patch.object(venvs, "_uv", lambda: uv),
    ):
        os.environ["RLTRAIN_VENV_CACHE"] = cache
        fresh = venvs.ensure_venv(name, packages)
        assert not fresh.cached
        first = _import_s(fresh.python, first_use)
        again = _import_s(fresh.python, first_use)
        cached = venvs.ensure_venv(name, packages)
        assert cached.cached
        return {
            "fresh_s": fresh.seconds,
            "first_import_s": first,
            "import_s": again,
            "cached_s": cached.seconds,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", choices=sorted(VENVS), action="append")
    args = parser.parse_args()
    os.environ["PIP_NO_CACHE_DIR"] = "1"
    os.environ["UV_NO_CACHE"] = "1"
    print(f"load before: {os.getloadavg()}", flush=True)
    print("| venv | tool | round | fresh (s) | first import (s) | import after (s) | cached (s) | load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for r in range(args.rounds):
        for name in args.only or sorted(VENVS):
            for tool in ("pip", "uv"):
                m = one(name, tool)
                load = os.getloadavg()[0]
                print(
                    f"| {name} | {tool} | {r + 1} | {m['fresh_s']:.0f} | {m['first_import_s']:.1f} | "
                    f"{m['import_s']:.1f} | {m['cached_s']:.1f} | {load:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
