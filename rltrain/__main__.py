"""Command line: `python -m rltrain [train] --config X.toml [--resume RUN_DIR] [--key.sub value ...]`,
plus `init [PATH]`, `runs [show ID | cancel ID | plot ID ...]`, `submit`, `worker`, `eval`, `envs`,
`models` (COMMANDS; `python -m rltrain --help` lists them)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def _overview() -> str:
    return (
        "usage: python -m rltrain [train] --config X.toml [--key.sub value ...]\n"
        "       python -m rltrain COMMAND [--help] ...\n\n"
        "Local GRPO post-training of LoRA adapters (rollouts from vLLM or transformers, rewards from an\n"
        "environment, a run record per run).\n\ncommands:\n"
        + "".join(f"  {name:8} {command.help}\n" for name, command in COMMANDS.items())
        + "\n`python -m rltrain COMMAND --help` shows a command's options."
    )


def _fail(msg: str, code: int) -> int:
    print(f"rltrain: {msg}", file=sys.stderr)
    return code


def cmd_train(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rltrain [train]",
        description="Train a LoRA adapter with GRPO.",
        epilog="Any other --key.sub value (or --key.sub=value) overrides that config key; "
        "`python -m rltrain init` writes every key with its meaning.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--config", metavar="X.toml", help="TOML config (optional with --resume: the run's own config)"
    )
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest complete checkpoint"
    )
    args, overrides = parser.parse_known_args(argv)
    from rltrain.config import ConfigError, load_config  # pydantic: a third of a second, not for `runs`

    if not args.config and not args.resume:
        parser.print_usage(sys.stderr)
        return _fail("--config is required (or --resume RUN_DIR); `python -m rltrain init` writes one", 2)
    resume = Path(args.resume) if args.resume else None
    try:
        if args.config:
            cfg = load_config(args.config, overrides)
        else:
            from rltrain.rundir import stored_config

            assert resume is not None
            cfg = stored_config(resume, overrides)
    except ConfigError as err:
        return _fail(str(err), 2)
    except FileNotFoundError as err:
        return _fail(f"--resume: {err}", 2)
    from rltrain.run import train

    config_dir = Path(args.config).resolve().parent if args.config else Path.cwd()
    try:
        session = train(cfg, resume, config_dir)
    except (ValueError, RuntimeError, OSError, ImportError, FloatingPointError) as err:
        # the record already says failed (with the traceback in error.log): one line here
        return _fail(f"run failed: {err}", 1)
    return 0 if session.record.status in ("succeeded", "cancelled") else 1


def cmd_init(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rltrain init", description="Write a commented starter config."
    )
    parser.add_argument(
        "path", nargs="?", default="rltrain.toml", help="where to write it (default rltrain.toml)"
    )
    parser.add_argument(
        "--prime-rl", action="store_true", help="prime-rl's rl.toml shape instead of rltrain's"
    )
    args = parser.parse_args(argv)
    path = Path(args.path)
    if path.exists():
        return _fail(f"init: {path} exists; not overwriting", 2)
    from rltrain.starter import PRIME_RL_STARTER, starter_config

    path.write_text(PRIME_RL_STARTER if args.prime_rl else starter_config())
    print(f"wrote {path}")
    return 0


def _no_options(name: str, argv: list[str]) -> None:
    """A command without options still answers --help, and refuses what it does not take."""
    argparse.ArgumentParser(prog=f"python -m rltrain {name}", description=COMMANDS[name].help).parse_args(
        argv
    )


def cmd_envs(argv: list[str]) -> int:
    if argv[:1] == ["venv"]:  # an environment's own interpreter (rltrain/envs/venvs.py)
        from rltrain.envs.venvs import cmd_venv

        return cmd_venv(argv[1:])
    _no_options("envs", argv)
    from rltrain.envs.catalog import print_catalog

    print_catalog()
    return 0


def cmd_models(argv: list[str]) -> int:
    from rltrain.families import format_table

    _no_options("models", argv)

    print(format_table())
    return 0


def cmd_eval(argv: list[str]) -> int:
    from rltrain.eval_cli import run_eval

    return run_eval(argv)


def cmd_serve(argv: list[str]) -> int:
    from rltrain.serve.cli import cmd_serve as serve

    return serve(argv)


@dataclass(frozen=True)
class Command:
    help: str  # one line: `python -m rltrain --help` lists them, each takes --help itself
    run: Callable[[list[str]], int]


def _runs(name: str) -> Callable[[list[str]], int]:
    """A command of rltrain/runs_cli.py, imported when it runs (like every command's own imports)."""

    def run(argv: list[str]) -> int:
        from rltrain import runs_cli

        return int(getattr(runs_cli, f"cmd_{name}")(argv))

    return run


# The dispatch table: a new command is one entry here.
COMMANDS: dict[str, Command] = {
    "train": Command(
        "train a run (the default command): --config X.toml [--key.sub value ...], or --resume RUN_DIR",
        cmd_train,
    ),
    "init": Command("write a commented starter config (--prime-rl: prime-rl's rl.toml shape)", cmd_init),
    "runs": Command(
        "list runs; runs show ID | runs cancel ID | runs plot ID [ID ...] (--runs DIR)", _runs("runs")
    ),
    "submit": Command("validate a config and queue it as a run for a worker (--runs DIR)", _runs("submit")),
    "worker": Command("run queued runs, oldest first (--runs DIR)", _runs("worker")),
    "serve": Command(
        "watch runs: prime's API for `prime train list/get/stop/...` and a dashboard at / (--runs DIR)",
        cmd_serve,
    ),
    "eval": Command("evaluate a model or an adapter on environments, without training", cmd_eval),
    "envs": Command(
        "list the built-in and installed environments; envs venv NAME -- PACKAGE... makes a venv for one",
        cmd_envs,
    ),
    "models": Command("the base-model registry: what each model family supports where", cmd_models),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="rltrain: %(message)s")
    for noisy in ("httpx", "urllib3", "vllm", "verifiers", "aiohttp.access", "mcp", "renderers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if argv[:1] in ([], ["-h"], ["--help"]):
        print(_overview(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] in COMMANDS:
        return COMMANDS[argv[0]].run(argv[1:])
    if not argv[0].startswith("-"):  # options first (`--config X`) is the default command, train
        names = ", ".join(COMMANDS)
        return _fail(f"unknown command {argv[0]!r}; the commands are: {names} (see --help)", 2)
    return cmd_train(argv)


if __name__ == "__main__":
    sys.exit(main())
