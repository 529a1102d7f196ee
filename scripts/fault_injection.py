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
a (randomly chosen) checkpoint, which random instants rarely hit. Prints a summary and writes it as JSON;
exits 1 on any failure.
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # check with this checkout's rltrain, the one the runs use (cwd=REPO)
DEMO = REPO / "configs" / "demo.toml"
# Metrics that must not change when a run is killed and resumed (timings and throughput may).
EXACT = ("reward_mean", "loss", "grad_norm", "input_tokens", "output_tokens", "training_tokens")


def launch(args: argparse.Namespace, run_id: str, log: Path) -> subprocess.Popen[bytes]:
    run_dir = args.out / run_id
    cmd = [sys.executable, "-m", "rltrain"]
    if (run_dir / "run.json").exists():
        cmd += ["--resume", str(run_dir)]
    else:
        cmd += ["--config", str(DEMO), "--rollout.backend", "hf", "--max_steps", str(args.max_steps)]
        cmd += ["--checkpoints.interval", str(args.interval), "--run.id", run_id]
        cmd += ["--run.output_dir", str(args.out), "--run.progress", "false"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with log.open("ab") as f:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)


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


def read_rows(path: Path) -> list[dict[str, Any]]:
    from rltrain.record import read_jsonl

    return read_jsonl(path)


def phase(run_dir: Path, max_steps: int) -> str:
    """Where the kill landed, from what it left on disk."""
    from rltrain.checkpoint import complete_checkpoints

    if not (run_dir / "run.json").exists():
        return "before the record existed"
    status = json.loads((run_dir / "run.json").read_text())["status"]
    if status in ("succeeded", "failed", "cancelled"):
        return f"after the run ended ({status})"
    if list((run_dir / "checkpoints").glob(".step_*")):
        return "during a checkpoint write"
    done = complete_checkpoints(run_dir)
    if not read_rows(run_dir / "metrics.jsonl") and not done:
        return "before the first step"
    if not done:
        return "before the first checkpoint"
    return "after the final checkpoint" if done[-1].name == f"step_{max_steps}" else "between checkpoints"


def kill_problems(run_dir: Path) -> list[str]:
    """What a kill may never break: a parseable, valid record and loadable complete checkpoints."""
    import jsonschema
    from safetensors.torch import load_file

    from rltrain.checkpoint import complete_checkpoints, load_trainer_state
    from rltrain.record import load_schema

    problems = []
    if (run_dir / "run.json").exists():
        try:
            jsonschema.validate(json.loads((run_dir / "run.json").read_text()), load_schema())
            json.loads((run_dir / "config.json").read_text())
        except (ValueError, OSError, jsonschema.ValidationError) as err:
            problems.append(f"record/config after kill: {type(err).__name__}: {err}")
    for ckpt in complete_checkpoints(run_dir):
        try:
            load_file(str(ckpt / "adapter_model.safetensors"))
            assert int(load_trainer_state(ckpt)["step"]) == int(ckpt.name[5:])
        except Exception as err:  # any failure to load is the finding
            problems.append(f"{ckpt.name} after kill: {type(err).__name__}: {err}")
    return problems


def final_problems(run_dir: Path, max_steps: int, ref: Path | None) -> list[str]:
    import jsonschema
    from safetensors.torch import load_file

    from rltrain.record import load_schema

    rec = json.loads((run_dir / "run.json").read_text())
    jsonschema.validate(rec, load_schema())
    rows = read_rows(run_dir / "metrics.jsonl")
    problems = [] if rec["status"] == "succeeded" else [f"status {rec['status']}: {rec.get('error')}"]
    if [r["step"] for r in rows] != list(range(1, max_steps + 1)):
        problems.append(f"steps logged: {[r['step'] for r in rows]}")
    problems += [
        f"incomplete checkpoint {c}" for c in rec["checkpoints"] if not (Path(c) / "COMPLETE").is_file()
    ]
    if ref is None or problems:
        return problems
    ref_rows = read_rows(ref / "metrics.jsonl")
    if [[r.get(k) for k in EXACT] for r in rows] != [[r.get(k) for k in EXACT] for r in ref_rows]:
        problems.append("metrics differ from the reference run")
    ref_usage = json.loads((ref / "run.json").read_text())["usage"]
    if any(rec["usage"][k] != ref_usage[k] for k in ("input_tokens", "output_tokens", "training_tokens")):
        problems.append(f"usage {rec['usage']} != reference {ref_usage}")
    name = f"checkpoints/step_{max_steps}/adapter_model.safetensors"
    a, b = load_file(str(run_dir / name)), load_file(str(ref / name))
    if a.keys() != b.keys() or max(float((a[k] - b[k]).abs().max()) for k in a) > 1e-5:
        problems.append("final adapter differs from the reference run")
    return problems


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
    """Kill this launch (while kills remain) or let it end; False: the trial is over."""
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
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            out["kills"].append({"at": round(delay, 2), "phase": phase(run_dir, args.max_steps)})
            out["problems"] += kill_problems(run_dir)
            return True
        out["kills"].append({"at": round(delay, 2), "phase": "after the process had exited"})
    if proc.wait(timeout=args.timeout) != 0:
        out["problems"].append(f"launch {out['launches']} exited {proc.returncode}; see {run_dir}.log")
        return False
    return json.loads((run_dir / "run.json").read_text())["status"] != "succeeded"


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
    out["problems"] += final_problems(args.out / out["id"], args.max_steps, args.out / "reference")
    return out


def summarize(
    args: argparse.Namespace, trials: list[dict[str, Any]], ref_s: float, wall: float
) -> dict[str, Any]:
    kills = [k for t in trials for k in t["kills"]]
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "setup": {
            "config": "configs/demo.toml",
            "max_steps": args.max_steps,
            "checkpoint_interval": args.interval,
        },
        "seed": args.seed,
        "trials": len(trials),
        "trials_random_instant": args.trials,
        "trials_mid_checkpoint": args.checkpoint_kills,
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=12)
    p.add_argument("--interval", type=int, default=2, help="checkpoints.interval")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds one uninterrupted launch may take")
    p.add_argument("--out", type=Path, help="working directory (default: a new temp dir)")
    p.add_argument("--summary", type=Path, help="summary JSON (default: OUT/summary.json)")
    args = p.parse_args()
    args.out = (args.out or Path(tempfile.mkdtemp(prefix="rltrain-faults-"))).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    # The first run on a machine is slower (cold caches): time a second one too, and keep the faster.
    active_s = min(reference(args, "warmup"), reference(args))
    print(f"reference run: {active_s:.1f} s from opening the run to its final status; kills uniform in it")
    rng, trials = random.Random(args.seed), []
    names = [f"trial-{i:02d}" for i in range(args.trials)]
    for name in names + [f"ckpt-{i:02d}" for i in range(args.checkpoint_kills)]:
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
