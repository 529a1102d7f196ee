"""`serve` starts light: its own modules import no torch (nor wandb, nor an HTTP framework)."""

from __future__ import annotations

import subprocess
import sys


def _loaded(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return set(out.stdout.split())


def test_serve_imports_no_torch() -> None:
    # what it needs of the run lifecycle comes from rltrain.queue, lazily (a test of the queue keeps
    # that one light)
    loaded = _loaded("import rltrain.serve.server, rltrain.serve.cli, rltrain.serve.submit")
    assert not {"torch", "wandb", "aiohttp", "fastapi", "rltrain.queue"} & loaded
