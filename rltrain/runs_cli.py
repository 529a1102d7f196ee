"""The commands that read and write the runs directory: `runs [show | cancel | plot]`, `submit`, `worker`.

None of them imports torch (tests/test_structure.py runs them in a subprocess to check): listing runs
answers in a fraction of a second, and the worker starts each run in its own process.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC
from pathlib import Path


def _fail(msg: str, code: int) -> int:
    print(f"rltrain: {msg}", file=sys.stderr)
    return code


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
    parser.add_argument(
        "--runs", metavar="DIR", help="runs directory to queue it in (default: the config's run.output_dir)"
    )
    args, overrides = parser.parse_known_args(argv)
    try:
        run_dir = queue.submit(args.config, overrides, Path(args.runs) if args.runs else None)
    except (ValueError, FileExistsError) as err:  # ConfigError is a ValueError; so is a bad run id
        return _fail(str(err), 2)
    print(run_dir.name)
    worker = "python -m rltrain worker" + (f" --runs {args.runs}" if args.runs else "")
    _fail(f"queued run {run_dir.name} in {run_dir.parent}; `{worker}` runs it", 0)
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
