"""A verifiers 0.4 taskset step against the same episodes as a native environment (issue 29).

`v1`: the fixture taskset count-turns-v1 (tests/fixtures/verifiers/count_turns_v1.py): a scripted user
asks for a number, then another; verifiers' `null` harness (its chat program) on the `subprocess`
runtime, against rltrain's token endpoint. `native`: the same conversation as an rltrain environment
(`env_response` asks the second question; the same system prompts, messages and reward). Both: the
tiny model, the `hf` backend, 8 rollouts of one task, 2 turns of <= 8 tokens, serial steps, so the
step's sampling time is all episode time. One torch thread.

For `v1`, timers split the episodes' wall time: the harness program's processes (one interpreter per
turn: verifiers' null harness relaunches its chat program for every turn, on the conversation so far),
the time from a program's launch to its first request at the endpoint (interpreter start and imports),
requests through the endpoint, and the engine's own sampling; and each step's CPU seconds of the
training process (the endpoint, verifiers' interception server, the engine and the trainer; the
harness programs are processes of their own and not in it). Modes alternate over `--rounds`, each
run its own subprocess; step 1 is warm-up and left out.

    .venv/bin/python scripts/bench_v1_taskset.py [--steps 5] [--rounds 2] [--out docs/bench_v1_taskset.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FIXTURES = REPO / "tests" / "fixtures" / "verifiers"
ROLLOUTS, TURNS, MAX_TOKENS = 8, 2, 8

NATIVE = '''
"""count-turns-v1 as a native rltrain environment: the same system prompts, questions and reward."""
from rltrain import Environment


def numeric(completion):
    shares = []
    for m in completion:
        if m["role"] == "assistant":
            chars = [c for c in m["content"] if not c.isspace()]
            shares.append(sum(c.isdigit() for c in chars) / len(chars) if chars else 0.0)
    return sum(shares) / len(shares) if shares else 0.0


def another(messages, state):
    return [{"role": "user", "content": "Another number."}]


def load_environment(tasks=8, turns=2):
    rows = [
        {"prompt": [{"role": "system", "content": f"Answer with numbers. ({i})"},
                    {"role": "user", "content": "Say a number."}]}
        for i in range(tasks)
    ]
    return Environment(rows, [numeric], env_response=another, max_turns=turns)
'''


class Events:
    """Wall-clock intervals per kind, from async and plain functions wrapped in place."""

    def __init__(self) -> None:
        self.spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.keyed: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)

    def wrap_async(
        self, owner: Any, name: str, kind: str, key: Callable[..., str | None] | None = None
    ) -> None:
        """`key(*args)`: which program a span belongs to (its secret), kept in `keyed`."""
        original = getattr(owner, name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                span = (start, time.perf_counter())
                self.spans[kind].append(span)
                label = key(*args) if key is not None else None
                if label:
                    self.keyed[kind][label] = span

        setattr(owner, name, timed)

    def wrap(self, owner: Any, name: str, kind: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.spans[kind].append((start, time.perf_counter()))

        setattr(owner, name, timed)

    def take(self) -> tuple[dict[str, list[tuple[float, float]]], dict[str, dict[str, tuple[float, float]]]]:
        out, keyed = dict(self.spans), dict(self.keyed)
        self.spans, self.keyed = defaultdict(list), defaultdict(dict)
        return out, keyed


def _program_secret(runtime: Any, argv: list[str], *rest: Any) -> str | None:
    return next((a.split("=", 1)[1] for a in argv if a.startswith("--api-key=")), None)


def _call_secret(server: Any, request: Any, dialect: Any) -> str | None:
    return str(dialect.secret(request.headers))


def instrument(events: Events) -> None:
    from rltrain.rollout.batcher import Batcher
    from rltrain.rollout.endpoint import Endpoint
    from rltrain.rollout.hf_backend import HFBackend

    events.wrap(HFBackend, "sample", "engine")
    events.wrap_async(Endpoint, "_generate", "request")
    events.wrap_async(Batcher, "_run", "batch")
    try:
        from verifiers.v1.runtimes.subprocess import SubprocessRuntime

        events.wrap_async(SubprocessRuntime, "run", "program", _program_secret)  # the program, per turn
        events.wrap_async(SubprocessRuntime, "start", "runtime_start")
        events.wrap_async(SubprocessRuntime, "teardown", "runtime_teardown")
        from rltrain.kinds.verifiers import V1Runner

        events.wrap_async(V1Runner, "_episodes", "episodes")
        from verifiers.v1.interception.server import InterceptionServer

        events.wrap_async(InterceptionServer, "handle_request", "intercept", _call_secret)  # its model call
    except ImportError:  # the native mode needs no verifiers
        pass


def _union(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one interval."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def split(
    spans: dict[str, list[tuple[float, float]]], keyed: dict[str, dict[str, tuple[float, float]]]
) -> dict[str, float]:
    """One step's v1 episode time, by what was going on."""
    programs = sorted(spans.get("program", []))
    requests = sorted(spans.get("request", []))
    # per program (one turn), matched to its model call by its secret: launch -> the call reaches
    # verifiers' interception server (interpreter start, imports, client set-up) -> the server answers
    # (verifiers, its renderer, rltrain's endpoint: batching and the engine) -> the program has exited
    phases: dict[str, list[float]] = defaultdict(list)
    for secret, (a, b) in keyed.get("program", {}).items():
        call = keyed.get("intercept", {}).get(secret)
        if call is not None:
            phases["launch_to_call_s"].append(call[0] - a)
            phases["call_s"].append(call[1] - call[0])
            phases["exit_after_answer_s"].append(b - call[1])
    out = {f"{k}_mean": statistics.fmean(v) for k, v in phases.items()} | {
        "programs": float(len(programs)),
        "program_s_mean": statistics.fmean(b - a for a, b in programs) if programs else 0.0,
        "requests": float(len(requests)),
        "request_s_mean": statistics.fmean(b - a for a, b in requests) if requests else 0.0,
        "engine_calls": float(len(spans.get("engine", []))),
        "engine_s": sum(b - a for a, b in spans.get("engine", [])),
        "any_program_running_s": _union(programs),
        "any_request_open_s": _union(requests),
        "episodes_s": sum(b - a for a, b in spans.get("episodes", [])),
        "runtime_start_s": _union(spans.get("runtime_start", [])),
        "runtime_teardown_s": _union(spans.get("runtime_teardown", [])),
    }
    return out


def run_child(mode: str, steps: int) -> dict[str, Any]:
    import torch

    # one thread, the tiny model's best: two make every trainer step wait on a busy machine, and which
    # mode that hit more decided the comparison
    torch.set_num_threads(1)
    from rltrain.config import parse_config
    from rltrain.run import train

    events = Events()
    instrument(events)
    per_step: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-v1-") as tmp:
        if mode == "v1":
            entry: dict[str, Any] = {"name": "count", "path": str(FIXTURES), "harness": {"id": "null"}}
            entry["taskset"] = {"id": "count-turns-v1", "turns": TURNS}
        else:
            env_file = Path(tmp) / "count_turns_native.py"
            env_file.write_text(NATIVE)
            entry = {"id": str(env_file), "name": "count", "args": {"turns": TURNS}}
        cfg = parse_config(
            {
                "model": "builtin:tiny",
                "max_steps": steps,
                "batch_size": ROLLOUTS,
                "rollouts_per_example": ROLLOUTS,
                "learning_rate": 1e-2,
                "max_async_level": 0,
                "sampling": {"max_tokens": MAX_TOKENS},
                "env": [entry],
                "rollout": {"backend": "hf"},
                "run": {"output_dir": tmp, "seed": 0, "progress": False, "tensorboard": False},
            }
        )
        last = [time.perf_counter(), time.process_time()]

        def on_step(step: int, metrics: dict[str, Any]) -> None:
            now, cpu = time.perf_counter(), time.process_time()
            keep = ("step_s", "rollout_s", "train_s", "turns_mean", "output_tokens", "errored_rollouts")
            row = {"step": step, "cycle_s": now - last[0], "cycle_cpu_s": cpu - last[1]}
            per_step.append(row | {k: metrics.get(k) for k in keep} | {"split": split(*events.take())})
            last[:] = [now, cpu]

        train(cfg, on_step=on_step)
    return {"mode": mode, "steps": per_step}


def spawn(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-v1-child-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--child", mode, "--child-out", str(out), "--steps", str(args.steps)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            sys.stderr.write((proc.stdout + proc.stderr)[-4000:])
            raise SystemExit(f"bench_v1_taskset: the {mode} run failed (exit {proc.returncode})")
        return json.loads(out.read_text())  # type: ignore[no-any-return]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    steps = [s for r in runs for s in r["steps"][1:]]  # step 1: warm-up
    out: dict[str, Any] = {"steps_measured": len(steps)}
    for key in ("step_s", "rollout_s", "train_s", "cycle_s", "cycle_cpu_s", "turns_mean", "output_tokens"):
        values = [s[key] for s in steps if s.get(key) is not None]
        out[f"median_{key}"] = statistics.median(values) if values else None
    keys = {k for s in steps for k in s["split"]}
    out["split_median"] = {k: statistics.median(s["split"].get(k, 0.0) for s in steps) for k in sorted(keys)}
    out["errored_rollouts"] = sum(s.get("errored_rollouts") or 0 for s in steps)
    return out


def report(result: dict[str, Any]) -> None:
    print(f"bench_v1_taskset: {result['description']}; load {result['loadavg_1min_before_after']}")
    for mode, s in result["modes"].items():
        print(
            f"  {mode:7} step {s['median_step_s']:.3f} s (rollouts {s['median_rollout_s']:.3f} s, "
            f"train {s['median_train_s']:.3f} s), this process's CPU {s['median_cycle_cpu_s']:.3f} s, "
            f"turns {s['median_turns_mean']}, "
            f"errored {s['errored_rollouts']}"
        )
        if mode == "v1":
            for k, v in s["split_median"].items():
                print(f"          {k:34} {v:.3f}")
    if result.get("ratio_v1_over_native") is not None:
        print(f"  v1 / native step time: {result['ratio_v1_over_native']:.1f}x")
        print(f"  v1 / native CPU of the training process: {result['cpu_ratio_v1_over_native']:.1f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5, help="steps per run (the first is warm-up)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default="v1,native")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench_v1_taskset.json")
    ap.add_argument("--child", choices=("v1", "native"), help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.child_out.write_text(json.dumps(run_child(args.child, args.steps)))
        return 0
    modes = args.modes.split(",")
    load = [os.getloadavg()[0]]
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:  # alternate: drift in machine load hits both
            runs[mode].append(spawn(mode, args))
    load.append(os.getloadavg()[0])
    summary = {m: summarize(rs) for m, rs in runs.items()}
    ratio = cpu_ratio = None
    if {"v1", "native"} <= summary.keys():
        ratio = summary["v1"]["median_step_s"] / summary["native"]["median_step_s"]
        cpu_ratio = summary["v1"]["median_cycle_cpu_s"] / summary["native"]["median_cycle_cpu_s"]
    result = {
        "description": (
            f"tiny model, hf backend, {ROLLOUTS} rollouts x {TURNS} turns x <= {MAX_TOKENS} tokens, serial, "
            f"{args.steps} steps x {args.rounds} rounds, alternating"
        ),
        "cpus": os.cpu_count(),
        "loadavg_1min_before_after": [round(x, 2) for x in load],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "modes": summary,
        "ratio_v1_over_native": ratio,
        "cpu_ratio_v1_over_native": cpu_ratio,  # this process only: the harness programs are not in it
    }
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"  wrote {args.out}")
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())
