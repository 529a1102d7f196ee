"""Command line: `python -m rltrain --config X.toml [--resume RUN_DIR] [--key.sub value ...]`,
plus `init [PATH]`, `runs [show ID | cancel ID]`, `submit`, `worker`, `eval`, `envs`, `models`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from rltrain.config import ConfigError, load_config

COMMANDS = ("init", "runs", "envs", "models", "submit", "worker", "eval")


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

    root = queue.runs_root()
    if argv[:1] in (["show"], ["cancel"]):
        if len(argv) < 2:
            return _fail(f"runs {argv[0]} ID", 2)
        try:
            run_dir = queue.run_path(root, argv[1])
        except ValueError as err:
            return _fail(f"runs {argv[0]}: {err}", 2)
        rec = queue.read_record(run_dir)
        if rec is None:
            return _fail(f"runs {argv[0]}: no run {argv[1]!r} in {root}", 2)
        return _runs_cancel(run_dir, argv[2:]) if argv[0] == "cancel" else _runs_show(run_dir, rec)
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
    from datetime import datetime, timezone

    try:
        then = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    s = int((datetime.now(timezone.utc) - then).total_seconds())
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


def _runs_cancel(run_dir: Path, argv: list[str]) -> int:
    from rltrain import queue

    parser = argparse.ArgumentParser(prog="python -m rltrain runs cancel ID")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the run to end")
    args = parser.parse_args(argv)
    try:
        print(f"rltrain: {queue.cancel(run_dir)}")
    except RuntimeError as err:
        return _fail(str(err), 1)
    if args.wait:
        status = queue.wait_until_done(run_dir, args.wait)
        print(f"rltrain: run {run_dir.name} {status}")
        return 0 if status == "cancelled" else 1
    return 0


def cmd_submit(argv: list[str]) -> int:
    from rltrain import queue

    parser = argparse.ArgumentParser(prog="python -m rltrain submit", description="Queue a run for a worker.")
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
        "--runs", default=str(queue.runs_root()), help="runs directory (default $RLTRAIN_RUNS or runs)"
    )
    args = parser.parse_args(argv)
    worker = queue.Worker(Path(args.runs), args.poll)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, worker.handle_signal)
    print(f"rltrain worker: pid {os.getpid()}, watching {args.runs}", flush=True)
    worker.run(once=args.once)
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
    from rltrain.families import format_table

    print(format_table())
    return 0


def cmd_eval(argv: list[str]) -> int:
    from rltrain.eval_cli import run_eval

    return run_eval(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="rltrain: %(message)s")
    for noisy in ("httpx", "urllib3", "vllm", "verifiers", "aiohttp.access", "mcp", "renderers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if argv and argv[0] in COMMANDS:
        handlers = {"init": cmd_init, "runs": cmd_runs, "envs": cmd_envs, "models": cmd_models}
        handlers.update(submit=cmd_submit, worker=cmd_worker, eval=cmd_eval)
        return handlers[argv[0]](argv[1:])
    return cmd_train(argv)


if __name__ == "__main__":
    sys.exit(main())
