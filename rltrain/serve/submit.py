"""`prime train rl.toml` against a local server: POST /api/v1/training/runs queues the run.

prime 0.18 sends prime-rl's rl.toml as parsed TOML (`{"config": {...}, "name": ...}`; it refuses the
template shape with a top-level `model` itself, before any request). The config is read exactly as
`python -m rltrain submit` reads a file (prime-rl's keys mapped, unknown keys refused, one line naming
the key), the run is written to the server's runs directory as `queued`, and a worker runs it.
Relative paths in the config (an environment file, env_files) are relative to the server's directory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rltrain import prime_rl
from rltrain.config import ConfigError, parse_config

log = logging.getLogger("rltrain")


def queue_run(body: Any, root: Path) -> str:
    """Queue the run `body` describes in `root`; returns its id. ValueError: a bad request or config."""
    if not isinstance(body, dict) or not isinstance(body.get("config"), dict):
        raise ValueError('the body must be a JSON object with a "config" object (prime-rl\'s rl.toml)')
    data = dict(body["config"])
    name = data.pop("name", None) or body.get("name")  # prime's run name: the record's config keeps it
    if prime_rl.is_prime_rl(data):
        try:
            data, notices = prime_rl.translate(data)
        except ValueError as err:
            raise ConfigError(f"config error: {err}") from None
        for line in notices:
            log.info("notice: prime-rl %s", line)
    data.setdefault("run", {})
    if not isinstance(data["run"], dict):
        raise ConfigError("config error: run: must be a section")
    data["run"]["output_dir"] = str(root)  # the server's runs, wherever the config pointed
    if isinstance(name, str) and name:
        data["name"] = name
    cfg = parse_config(data)
    from rltrain.queue import _pin_paths
    from rltrain.rundir import create_run_dir

    _pin_paths(cfg, Path.cwd())
    try:
        run_dir, _ = create_run_dir(cfg)
    except FileExistsError as err:
        raise ValueError(str(err)) from None
    log.info("queued run %s (from POST /api/v1/training/runs)", run_dir.name)
    return run_dir.name
