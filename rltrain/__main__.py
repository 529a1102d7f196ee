"""Command line: `python -m rltrain --config X.toml [--resume RUN_DIR] [--key.sub value ...]`,
plus `init [PATH]`, `runs [show ID]`, `envs`, `models`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from rltrain.config import ConfigError, load_config, parse_config
from rltrain.starter import STARTER_CONFIG

COMMANDS = ("init", "runs", "envs", "models")


def _fail(msg: str, code: int) -> int:
    print(f"rltrain: {msg}", file=sys.stderr)
    return code


def cmd_train(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m rltrain", description="Train a LoRA adapter with GRPO.")
    parser.add_argument("--config", help="TOML config (optional with --resume: the run's own config)")
    parser.add_argument("--resume", help="continue the run in RUN_DIR from its latest complete checkpoint")
    args, overrides = parser.parse_known_args(argv)
    if not args.config and not args.resume:
        parser.print_usage(sys.stderr)
        return _fail("--config is required (or --resume RUN_DIR); `python -m rltrain init` writes one", 2)
    resume = Path(args.resume) if args.resume else None
    try:
        if args.config:
            cfg = load_config(args.config, overrides)
        else:
            from rltrain.config import apply_overrides

            assert resume is not None
            stored = json.loads((resume / "config.json").read_text())
            cfg = parse_config(apply_overrides(stored, overrides))
    except ConfigError as err:
        return _fail(str(err), 2)
    except FileNotFoundError as err:
        return _fail(f"--resume: {err}", 2)
    from rltrain.run import train

    config_dir = Path(args.config).resolve().parent if args.config else Path.cwd()
    try:
        session = train(cfg, resume, config_dir)
    except (
        ValueError,
        RuntimeError,
        FileNotFoundError,
        FileExistsError,
        ImportError,
        FloatingPointError,
    ) as err:
        return _fail(f"run failed: {err}", 1)
    return 0 if session.record.status in ("succeeded", "cancelled") else 1


def cmd_init(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else Path("rltrain.toml")
    if path.exists():
        return _fail(f"init: {path} exists; not overwriting", 2)
    path.write_text(STARTER_CONFIG)
    print(f"wrote {path}")
    return 0


def cmd_runs(argv: list[str]) -> int:
    root = Path(os.environ.get("RLTRAIN_RUNS", "runs"))
    if argv[:1] == ["show"]:
        if len(argv) < 2:
            return _fail("runs show ID", 2)
        path = root / argv[1] / "run.json"
        if not path.is_file():
            return _fail(f"runs show: no run {argv[1]!r} in {root}", 2)
        print(path.read_text(), end="")
        return 0
    print(f"{'id':32} {'status':10} {'step':>9} {'reward':>7} {'tokens':>9}  base_model / environment")
    for rec_path in sorted(root.glob("*/run.json")):
        rec = json.loads(rec_path.read_text())
        m, u = rec.get("metrics", {}), rec.get("usage", {})
        steps = f"{m.get('step', 0)}/{rec.get('config', {}).get('max_steps', '?')}"
        tokens = u.get("input_tokens", 0) + u.get("output_tokens", 0)
        print(
            f"{rec['id']:32} {rec['status']:10} {steps:>9} {m.get('reward_mean', 0.0):7.3f} {tokens:9d}  "
            f"{rec.get('base_model')} / {rec.get('environment')}"
        )
    return 0


def cmd_envs(argv: list[str]) -> int:
    from importlib.metadata import entry_points

    from rltrain.envs.loader import ENTRY_POINT_GROUP, builtin_names

    for name in builtin_names():
        print(f"{name:24} built-in")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        print(f"{ep.name:24} entry point ({ep.value})")
    return 0


def cmd_models(argv: list[str]) -> int:
    from rltrain.models import REGISTRY

    print(f"{'name':24} {'hub id':48} {'family':12} params")
    for spec in REGISTRY.values():
        print(f"{spec.name:24} {spec.hub_id:48} {spec.family:12} {spec.params}")
    print(f"{'builtin:tiny':24} {'(built locally)':48} {'qwen3':12} 0.9M")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="rltrain: %(message)s")
    for noisy in ("httpx", "urllib3", "vllm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if argv and argv[0] in COMMANDS:
        return {"init": cmd_init, "runs": cmd_runs, "envs": cmd_envs, "models": cmd_models}[argv[0]](argv[1:])
    return cmd_train(argv)


if __name__ == "__main__":
    sys.exit(main())
