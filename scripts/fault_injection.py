#!/usr/bin/env python
"""Fault injection: SIGKILL the demo run at random instants, resume it, check that nothing was lost.

    .venv/bin/python scripts/fault_injection.py                       # 20 trials, ~10 min on 2 cores
    .venv/bin/python scripts/fault_injection.py --trials 2 --max-steps 4

First an uninterrupted reference run of configs/demo.toml (hf rollouts, --max_steps 12, a checkpoint
every 2 steps) gives the run's timeline. Each trial then starts the same run as its own process, kills
it with SIGKILL at a seeded random instant in that timeline, and resumes it with `--resume` until it
ends (`--config` again if the kill came before run.json existed).
After every kill: run.json parses and validates against the schema, and every complete checkpoint
loads. At the end of every trial: status succeeded, the record validates, every step is logged exactly
once, the record's checkpoints are complete, and metrics, token usage and the final adapter equal the
reference run's (resume is exact). `--checkpoint-kills` more trials are killed in the middle of writing
a (randomly chosen) checkpoint, which random instants rarely hit; `--interrupts` more get Ctrl-C (SIGINT:
status cancelled, exit 0) instead of SIGKILL. `--max-async-level 1` runs the producer ahead: its
checkpoints keep the batches sampled ahead, so those runs too must equal the reference value for value
(docs/reliability.md). Prints a summary and writes it as JSON; exits 1 on any
failure.

`--multi-turn` runs a hostile multi-turn environment instead of the demo (scripts/hostile_env.py): by
a hash of the conversation, its answer to a turn hangs past the turn timeout, floods 1 MB of text,
raises, starts a `sleep` child that outlives the turn, or answers with malformed and deeply nested
tool-call markup or content a chat template cannot render. Each of those may cost its episode, never
the step or the run. Every process the environment ran (its workers and their children) records its
pid; after every kill, and after every finished trial, each must be gone within seconds. These runs are
compared on their prompts, their order and usage, not value for value: a hang takes its turn timeout
while other episodes go on, so which turns are sampled together (and so their numerics) depends on
timing, even between two uninterrupted runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fault_checks import final_problems, kill_problems, phase, survivors  # scripts/, next to this file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # check with this checkout's rltrain, the one the runs use (cwd=REPO)
DEMO = REPO / "configs" / "demo.toml"


def launch(args: argparse.Namespace, run_id: str, log: Path) -> subprocess.Popen[bytes]:
    run_dir = args.out / run_id
    cmd = [sys.executable, "-m", "rltrain"]
    if (run_dir / "run.json").exists():
        cmd += ["--resume", str(run_dir)]
    else:
        cmd += ["--config", str(args.config), "--rollout.backend", "hf", "--max_steps", str(args.max_steps)]
        cmd += ["--checkpoints.interval", str(args.interval), "--run.id", run_id]
        cmd += ["--run.output_dir", str(args.out), "--run.progress", "false"]
        cmd += ["--max_async_level", str(args.max_async_level)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with log.open("ab") as f:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)


def hostile_config(out: Path) -> Path:
    """The hostile environment's run config (its pids go to OUT/pids), beside the trials' runs."""
    import tomli_w

    (out / "pids").mkdir(exist_ok=True)
    env = out / "hostile_env.py"
    env.write_text((REPO / "scripts" / "hostile_env.py").read_text().replace("PIDS_DIR", str(out / "pids")))
    cfg = {
        "model": "builtin:tiny",
        "env": [{"id": str(env)}],
        "batch_size": 8,
        "rollouts_per_example": 4,
        "learning_rate": 1e-2,
        "sampling": {"max_tokens": 8},
        "scoring": {"workers": 2, "turn_timeout_s": 2.0, "episode_timeout_s": 30.0, "max_env_chars": 512},
    }
    path = out / "hostile.toml"
    path.write_text(tomli_w.dumps(cfg))
    return path


def wait_until_open(proc: subprocess.Popen[bytes], run_dir: Path) -> None:
    """Until the process holds the run: rundir.acquire_lock writes its pid into `.lock`."""
    while proc.poll() is None:
        try:
            if (run_dir / ".lock").read_text().strip() == str(proc.pid):
                return
        except OSError:
            pass
        time.sleep(0.005)


def reference(args: argparse.Namespace, run_id: str = "reference") -> float:
    """Run once without faults; returns its active time (from opening the run to its final status)."""
    proc = launch(args, run_id, args.out / f"{run_id}.log")
    run_dir = args.out / run_id
    wait_until_open(proc, run_dir)
    t0, active = time.monotonic(), 0.0
    while proc.poll() is None:
        if not active and json.loads((run_dir / "run.json").read_text())["status"] == "succeeded":
            active = time.monotonic() - t0
        time.sleep(0.005)
    problems = final_problems(run_dir, args.max_steps, None)
    if proc.returncode or problems:
        sys.exit(f"{run_id} run failed (rc {proc.returncode}): {problems}; see {run_dir}.log")
    return active or time.monotonic() - t0


def wait_for_checkpoint_write(proc: subprocess.Popen[bytes], run_dir: Path, nth: int) -> None:
    """Until the nth checkpoint is being written (its hidden temp dir exists), or the process ends."""
    seen: set[str] = set()
    while proc.poll() is None:
        seen.update(p.name for p in (run_dir / "checkpoints").glob(".step_*"))
        if len(seen) >= nth:
            return
        time.sleep(0.0005)


def run_launch(
    args: argparse.Namespace, proc: subprocess.Popen[bytes], rng: random.Random, active_s: float, out: dict
) -> bool:
    """Kill or interrupt this launch (while faults remain) or let it end; False: the trial is over."""
    run_dir = args.out / out["id"]
    if len(out["kills"]) < args.kills_per_trial:
        wait_until_open(proc, run_dir)  # imports take seconds and touch nothing: skip them
        if out["id"].startswith("ckpt"):  # targeted: SIGKILL in the middle of a checkpoint write
            delay = float(rng.randint(1, args.max_steps // args.interval))
            wait_for_checkpoint_write(proc, run_dir, int(delay))
        else:
            delay = rng.uniform(0.0, active_s)
        try:
            proc.wait(timeout=0.0 if out["id"].startswith("ckpt") else delay)
        except subprocess.TimeoutExpired:
            ctrl_c = out["id"].startswith("int")
            proc.send_signal(signal.SIGINT if ctrl_c else signal.SIGKILL)
            rc = proc.wait(timeout=args.timeout)
            out["kills"].append({"at": round(delay, 2), "phase": phase(run_dir, args.max_steps)})
            out["problems"] += kill_problems(run_dir) + (interrupt_problems(run_dir, rc) if ctrl_c else [])
            out["problems"] += survivors(args.out / "pids")
            return True
        out["kills"].append({"at": round(delay, 2), "phase": "after the process had exited"})
    if proc.wait(timeout=args.timeout) != 0:
        out["problems"].append(f"launch {out['launches']} exited {proc.returncode}; see {run_dir}.log")
        return False
    return json.loads((run_dir / "run.json").read_text())["status"] != "succeeded"


def interrupt_problems(run_dir: Path, rc: int) -> list[str]:
    """Ctrl-C: the run stops after its step with a final checkpoint, `cancelled`, exit 0 (or it had
    already ended, or had not yet written its record)."""
    if not (run_dir / "run.json").exists():
        return []
    status = json.loads((run_dir / "run.json").read_text())["status"]
    if rc != 0 or status not in ("cancelled", "succeeded"):
        return [f"Ctrl-C: exit {rc}, status {status}; see {run_dir}.log"]
    return []


def trial(args: argparse.Namespace, name: str, rng: random.Random, active_s: float) -> dict[str, Any]:
    """Start a run, kill it, resume it until it ends; then check everything against the reference."""
    out: dict[str, Any] = {"id": name, "kills": [], "launches": 0, "problems": []}
    while out["launches"] < args.kills_per_trial + 3:
        proc = launch(args, out["id"], args.out / f"{out['id']}.log")
        out["launches"] += 1
        try:
            if not run_launch(args, proc, rng, active_s, out):
                break
        finally:
            if proc.poll() is None:  # interrupted harness: leave no training process behind
                proc.kill()
    # a hostile multi-turn run is compared on its prompts only: its hangs make turns' batching timing-bound
    exact = not args.multi_turn
    out["problems"] += final_problems(args.out / out["id"], args.max_steps, args.out / "reference", exact)
    out["problems"] += survivors(args.out / "pids")
    return out


def summarize(
    args: argparse.Namespace, trials: list[dict[str, Any]], ref_s: float, wall: float
) -> dict[str, Any]:
    kills = [k for t in trials for k in t["kills"]]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "setup": {
            "config": "scripts/hostile_env.py" if args.multi_turn else "configs/demo.toml",
            "max_steps": args.max_steps,
            "checkpoint_interval": args.interval,
            "max_async_level": args.max_async_level,
        },
        "seed": args.seed,
        "trials": len(trials),
        "trials_random_instant": args.trials,
        "trials_mid_checkpoint": args.checkpoint_kills,
        "trials_ctrl_c": args.interrupts,
        "kills": len(kills),
        "kill_phases": dict(Counter(k["phase"] for k in kills).most_common()),
        "resumes": sum(t["launches"] - 1 for t in trials),
        "succeeded_and_exact": sum(not t["problems"] for t in trials),
        "failures": {t["id"]: t["problems"] for t in trials if t["problems"]},
        "reference_active_s": round(ref_s, 1),
        "wall_s": round(wall, 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--kills-per-trial", type=int, default=1)
    p.add_argument("--checkpoint-kills", type=int, default=4, help="extra trials killed mid-checkpoint")
    p.add_argument("--interrupts", type=int, default=0, help="extra trials stopped by Ctrl-C (SIGINT)")
    p.add_argument("--max-async-level", type=int, default=0, help="0: serial; 1, 2: ahead")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=12)
    p.add_argument("--interval", type=int, default=2, help="checkpoints.interval")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds one uninterrupted launch may take")
    p.add_argument("--out", type=Path, help="working directory (default: a new temp dir)")
    p.add_argument("--summary", type=Path, help="summary JSON (default: OUT/summary.json)")
    p.add_argument("--multi-turn", action="store_true", help="a hostile multi-turn environment, not the demo")
    args = p.parse_args()
    args.out = (args.out or Path(tempfile.mkdtemp(prefix="rltrain-faults-"))).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    args.config = hostile_config(args.out) if args.multi_turn else DEMO
    t0 = time.monotonic()
    # The first run on a machine is slower (cold caches): time a second one too, and keep the faster.
    active_s = min(reference(args, "warmup"), reference(args))
    print(f"reference run: {active_s:.1f} s from opening the run to its final status; kills uniform in it")
    rng, trials = random.Random(args.seed), []
    names = [f"trial-{i:02d}" for i in range(args.trials)]
    names += [f"ckpt-{i:02d}" for i in range(args.checkpoint_kills)]
    for name in names + [f"int-{i:02d}" for i in range(args.interrupts)]:
        trials.append(trial(args, name, rng, active_s))
        t = trials[-1]
        print(f"{t['id']}: kills {[(k['at'], k['phase']) for k in t['kills']]} -> {t['problems'] or 'ok'}")
    summary = summarize(args, trials, active_s, time.monotonic() - t0)
    path = args.summary or args.out / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"{summary['succeeded_and_exact']}/{len(trials)} trials succeeded and match the reference; {path}")
    return 0 if summary["succeeded_and_exact"] == len(trials) else 1


if __name__ == "__main__":
    sys.exit(main())
