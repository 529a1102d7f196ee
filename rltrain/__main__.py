"""Command line: `python -m rltrain [train] --config X.toml [--resume RUN_DIR] [--key.sub value ...]`,
plus `init [PATH]`, `runs [show ID | cancel ID | plot ID ...]`, `submit`, `worker`, `eval`, `envs`,
`models` (COMMANDS; `python -m rltrain --help` lists them)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import UTC
from pathlib import Path

from rltrain.config import ConfigError, load_config

# name -> one line; `python -m rltrain --help` lists them, each takes --help itself
COMMANDS = {
    "train": "train a run (the default command): --config X.toml [--key.sub value ...], or --resume RUN_DIR",
    "init": "write a commented starter config (--prime-rl: prime-rl's rl.toml shape)",
    "runs": "list runs; runs show ID | runs cancel ID | runs plot ID [ID ...] (--runs DIR)",
    "submit": "validate a config and queue it as a run for a worker",
    "worker": "run queued runs, oldest first",
    "serve": "watch runs: prime's API for `prime train list/get/stop/...` and a dashboard at /",
    "eval": "evaluate a model or an adapter on environments, without training",
    "envs": "list the built-in and installed environments",
    "models": "the base-model registry: what each model family supports where",
}
OVERVIEW = (
    "usage: python -m rltrain [train] --config X.toml [--key.sub value ...]\n"
    "       python -m rltrain COMMAND [--help] ...\n\n"
    "Local GRPO post-training of LoRA adapters (rollouts from vLLM or transformers, rewards from an\n"
    "environment, a run record per run).\n\ncommands:\n"
    + "".join(f"  {name:8} {text}\n" for name, text in COMMANDS.items())
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


def cmd_runs(argv: list[str]) -> int:
    from rltrain import queue

    parser = argparse.ArgumentParser(
        prog="python -m rltrain runs", description="List, show, cancel, plot runs."
    )
    parser.add_argument(
        "--runs",
        metavar="DIR",
        default=str(queue.runs_root()),
        help="runs directory (default $RLTRAIN_RUNS or runs)",
    )
    sub = parser.add_subparsers(dest="action", metavar="{show,cancel,plot}")
    for name, text in (
        ("show", "print a run's record (run.json)"),
        ("cancel", "cancel a queued or running run"),
    ):
        one = sub.add_parser(name, help=text, description=text)
        one.add_argument("id", help="the run's id")
        one.add_argument("--runs", metavar="DIR", default=argparse.SUPPRESS, help="runs directory")
        if name == "cancel":
            one.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the run to end")
    plot = sub.add_parser(
        "plot", help="overlay runs' curves in one PNG", description="Overlay runs' curves in one PNG."
    )
    plot.add_argument("ids", nargs="+", metavar="ID", help="runs to compare")
    plot.add_argument("--out", default="curves.png", help="the PNG to write (default curves.png)")
    plot.add_argument("--runs", metavar="DIR", default=argparse.SUPPRESS, help="runs directory")
    args = parser.parse_args(argv)
    root = Path(args.runs)
    if args.action is None:
        return _runs_table(root)
    ids = args.ids if args.action == "plot" else [args.id]
    try:
        run_dirs = [queue.run_path(root, run_id) for run_id in ids]
    except ValueError as err:
        return _fail(f"runs {args.action}: {err}", 2)
    missing = [d.name for d in run_dirs if queue.read_record(d) is None]
    if missing:
        return _fail(f"runs {args.action}: no run {missing[0]!r} in {root}", 2)
    if args.action == "plot":
        from rltrain.plots import plot_runs

        try:
            print(f"wrote {plot_runs(run_dirs, Path(args.out))}")
        except ValueError as err:
            return _fail(f"runs plot: {err}", 2)
        return 0
    if args.action == "cancel":
        return _runs_cancel(run_dirs[0], args.wait)
    return _runs_show(run_dirs[0], queue.read_record(run_dirs[0]) or {})


def _runs_table(root: Path) -> int:
    from rltrain import queue

    print(
        f"{'id':32} {'status':12} {'step':>9} {'reward':>7} {'tokens':>9} {'cost':>8} {'age':>4}  "
        "base_model / environment"
    )
    for run_dir in queue.all_runs(root):
        rec = queue.read_record(run_dir)
        if rec is None:
            print(f"{run_dir.name:32} unreadable   (run.json does not parse)")
            continue
        m, u = rec.get("metrics") or {}, rec.get("usage") or {}
        steps = f"{m.get('step', 0)}/{(rec.get('config') or {}).get('max_steps', '?')}"
        tokens = int(u.get("input_tokens", 0)) + int(u.get("output_tokens", 0))
        print(
            f"{rec.get('id', run_dir.name):32} {queue.effective_status(run_dir, rec):12} {steps:>9} "
            f"{float(m.get('reward_mean', 0.0)):7.3f} {tokens:9d} {float(u.get('cost_usd', 0.0)):8.2f} "
            f"{_age(str(rec.get('created_at', ''))):>4}  {rec.get('base_model')} / {rec.get('environment')}"
        )
    return 0


def _age(created_at: str) -> str:
    from datetime import datetime

    try:
        then = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    s = int((datetime.now(UTC) - then).total_seconds())
    unit, size = next(((u, n) for u, n in (("d", 86400), ("h", 3600), ("m", 60)) if s >= n), ("s", 1))
    return f"{max(s, 0) // size}{unit}"


def _runs_show(run_dir: Path, rec: dict) -> int:
    from rltrain import queue

    print((run_dir / "run.json").read_text(), end="")
    if queue.effective_status(run_dir, rec) == "failed-stale":
        abort = run_dir / ".abort"  # a rank's own error, when the main rank died before recording it
        why = f" after `{abort.read_text().strip()}`" if abort.is_file() else ""
        resume = f"python -m rltrain --resume {run_dir}"
        _fail(f"failed-stale{why}: no process holds this run; continue it: {resume}", 0)
    return 0


def _runs_cancel(run_dir: Path, wait: float) -> int:
    from rltrain import queue

    try:
        print(f"rltrain: {queue.cancel(run_dir)}")
    except RuntimeError as err:
        return _fail(str(err), 1)
    if wait:
        status = queue.wait_until_done(run_dir, wait)
        print(f"rltrain: run {run_dir.name} {status}")
        return 0 if status == "cancelled" else 1
    return 0


def cmd_submit(argv: list[str]) -> int:
    from rltrain import queue

    parser = argparse.ArgumentParser(
        prog="python -m rltrain submit", description="Queue a run for a worker.", allow_abbrev=False
    )
    parser.add_argument("--config", required=True, help="TOML config")
    args, overrides = parser.parse_known_args(argv)
    try:
        run_dir = queue.submit(args.config, overrides)
    except (ValueError, FileExistsError) as err:  # ConfigError is a ValueError; so is a bad run id
        return _fail(str(err), 2)
    print(run_dir.name)
    _fail(f"queued run {run_dir.name} in {run_dir.parent}; `python -m rltrain worker` runs it", 0)
    return 0


def cmd_worker(argv: list[str]) -> int:
    import signal

    from rltrain import queue

    parser = argparse.ArgumentParser(prog="python -m rltrain worker", description="Run queued runs.")
    parser.add_argument("--once", action="store_true", help="run what is queued, then exit (no polling)")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between looks at an empty queue")
    parser.add_argument(
        "--runs",
        metavar="DIR",
        default=str(queue.runs_root()),
        help="runs directory (default $RLTRAIN_RUNS or runs)",
    )
    args = parser.parse_args(argv)
    worker = queue.Worker(Path(args.runs), args.poll)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, worker.handle_signal)
    print(f"rltrain worker: pid {os.getpid()}, watching {args.runs}", flush=True)
    worker.run(once=args.once)
    return 0


def _no_options(name: str, argv: list[str]) -> None:
    """A command without options still answers --help, and refuses what it does not take."""
    argparse.ArgumentParser(prog=f"python -m rltrain {name}", description=COMMANDS[name]).parse_args(argv)


def cmd_envs(argv: list[str]) -> int:
    from importlib.metadata import entry_points

    _no_options("envs", argv)

    from rltrain.envs.loader import ENTRY_POINT_GROUP, builtin_names

    for name in builtin_names():
        print(f"{name:24} built-in")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        print(f"{ep.name:24} entry point ({ep.value})")
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="rltrain: %(message)s")
    for noisy in ("httpx", "urllib3", "vllm", "verifiers", "aiohttp.access", "mcp", "renderers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if argv[:1] in ([], ["-h"], ["--help"]):
        print(OVERVIEW, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] in COMMANDS:
        handlers = {"train": cmd_train, "init": cmd_init, "runs": cmd_runs, "envs": cmd_envs}
        handlers.update(models=cmd_models, submit=cmd_submit, worker=cmd_worker, eval=cmd_eval)
        handlers["serve"] = cmd_serve
        return handlers[argv[0]](argv[1:])
    return cmd_train(argv)


if __name__ == "__main__":
    sys.exit(main())
