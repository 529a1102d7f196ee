"""Where a step's time goes (issue 29): model time (sampling, the trainer) and everything around it.

Runs a config (default: configs/demo.toml, the tiny model at its defaults) through the public
`rltrain.run.train`, in this process, with timers wrapped around the functions each part of a step
goes through: sampling and the trainer step (the model's time); reward scoring (IPC to the worker
processes), the batch's metrics, metrics.jsonl, the rollouts file, run.json, TensorBoard, the progress
bar, checkpoints, curves, adapter sync and the sampler's weight snapshot (everything else). Timers
are per thread; the trainer thread's cycle (end of one step to the end of the next, as bench_vs_trl
measures it) minus what they cover is Python dispatch. Each mode (`default`: the config as written,
where max_async_level "auto" is serial on CPU; `serial`: max_async_level = 0; `async`: 1) is its own
subprocess, alternating over `--rounds`; the first step of each run is warm-up and left out. A mode
with `@N` (`default@1`) sets N torch threads first (torch's own default: one per core).

Timers find their functions by name wherever rltrain imported them, so a module that moves keeps
being measured; a name that no longer exists is reported, not fatal.

    .venv/bin/python scripts/bench_step_breakdown.py [--config configs/demo.toml] [--steps 30]
        [--modes default,default@1,async] [--rounds 2] [--out docs/bench_step_breakdown.json]
    .venv/bin/python scripts/bench_step_breakdown.py --profile /tmp/step.html   # + a pyinstrument profile
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# label -> "module:Qualified.name" of the functions timed under it. Nested timers (a label inside
# another) are subtracted from their parent in the report (NESTED).
TARGETS: dict[str, list[str]] = {
    # model time
    "sample": [
        "rltrain.rollout.hf_backend:HFBackend.sample",
        "rltrain.rollout.vllm_backend:VLLMBackend.sample",
    ],
    "train_step": ["rltrain.trainer.step:train_step"],
    # everything else
    "scoring_ipc": ["rltrain.envs.scoring:Scorer.score"],
    "finish": ["rltrain.orchestrator.collect:Collector.finish"],
    "batch_metrics": ["rltrain.orchestrator.shares:gather"],
    "log_step": ["rltrain.recorder:Recorder.log_step"],
    "metrics_jsonl": ["rltrain.record:append_jsonl"],
    "run_json": ["rltrain.recorder:Recorder.save"],
    "tensorboard": [
        "torch.utils.tensorboard.writer:SummaryWriter.add_scalar",
        "torch.utils.tensorboard.writer:SummaryWriter.flush",
    ],
    "progress_bar": ["rltrain.progress:Progress.update"],
    "checkpoint": ["rltrain.checkpoint:save"],
    "curves": ["rltrain.recorder:Recorder.write_curves"],
    "adapter_export": ["rltrain.checkpoint:export_copy"],
    "adapter_sync": [
        "rltrain.orchestrator.adapter_sync:AdapterSync.push_first",
        "rltrain.orchestrator.adapter_sync:AdapterSync.export",
        "rltrain.orchestrator.adapter_sync:AdapterSync.probed",
        "rltrain.orchestrator.adapter_sync:AdapterSync.land",
        "rltrain.orchestrator.adapter_sync:AdapterSync.check",
    ],
    "weight_snapshot": ["rltrain.rollout.hf_backend:HFBackend.hold"],
    "batch_wait": [
        "rltrain.orchestrator.producer:AsyncSource.next",
        "rltrain.orchestrator.sources:SerialSource.next",
    ],
    "gate": ["rltrain.orchestrator.producer:AsyncSource.before_update"],
}
MODEL = ("sample", "train_step")
# modes besides `default` (the config as written; max_async_level "auto" is serial on CPU)
LEVELS = {"serial": 0, "async": 1}
# parent -> the labels timed inside it (exclusive time = parent - children, on the same thread)
NESTED = {
    "finish": ("scoring_ipc",),
    "log_step": ("metrics_jsonl", "run_json", "tensorboard"),
    "checkpoint": (),
    "batch_wait": ("sample", "finish", "batch_metrics", "weight_snapshot"),
}


class Timers:
    """Wall seconds per (thread kind, label); thread kind = the thread's name without its number."""

    def __init__(self) -> None:
        self.total: dict[tuple[str, str], float] = defaultdict(float)  # wall seconds
        self.cpu: dict[tuple[str, str], float] = defaultdict(float)  # the calling thread's CPU seconds
        self.missing: list[str] = []
        self._lock = threading.Lock()

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                name = threading.current_thread().name
                kind = "main" if name == "MainThread" else name.rstrip("0123456789_-")
                with self._lock:
                    self.total[(kind, label)] += time.perf_counter() - start
                    self.cpu[(kind, label)] += time.thread_time() - cpu

        timed.__wrapped__ = fn  # type: ignore[attr-defined]
        return timed

    def install(self) -> None:
        for label, names in TARGETS.items():
            for name in names:
                if not self._patch(label, name):
                    self.missing.append(name)

    def _patch(self, label: str, name: str) -> bool:
        module_name, qual = name.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return False
        owner: Any = module
        *path, attr = qual.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        original = getattr(owner, attr, None) if owner is not None else None
        if original is None:
            return False
        wrapped = self.wrap(label, original)
        setattr(owner, attr, wrapped)
        if owner is module:  # a function imported by name elsewhere: replace those references too
            for other in list(sys.modules.values()):
                if getattr(other, "__name__", "").startswith("rltrain"):
                    for key, value in list(vars(other).items()):
                        if value is original:
                            setattr(other, key, wrapped)
        return True

    def snapshot(self) -> dict[tuple[str, str], float]:
        """Wall seconds per (thread kind, label), and CPU seconds under ("cpu:" + kind, label)."""
        with self._lock:
            return dict(self.total) | {(f"cpu:{k}", lab): v for (k, lab), v in self.cpu.items()}


def _import_all() -> None:
    """Import the modules that hold timed functions first, so references to them can be replaced."""
    modules = {name.split(":")[0] for names in TARGETS.values() for name in names}
    for module in sorted(modules) + ["rltrain.run", "rltrain.orchestrator.setup"]:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    """One run of the config in this process; per-step timer deltas on the trainer thread."""
    _import_all()
    timers = Timers()
    timers.install()
    from rltrain.config import load_config
    from rltrain.run import train

    with tempfile.TemporaryDirectory(prefix="bench-breakdown-") as tmp:
        overrides = [f"--run.output_dir={json.dumps(tmp)}", f"--max_steps={args.steps}"]
        level, _, threads = args.child.partition("@")
        if level in LEVELS:
            overrides.append(f"--max_async_level={LEVELS[level]}")
        if threads:  # before the run: sampling ahead halves what it finds (setup._share_cores)
            import torch

            torch.set_num_threads(int(threads))
        cfg = load_config(args.config, overrides)
        cycles: list[dict[str, Any]] = []
        last: list[Any] = [time.perf_counter(), time.process_time(), time.thread_time(), timers.snapshot()]

        def on_step(step: int, metrics: dict[str, Any]) -> None:  # on the trainer thread
            now, cpu, mine, snap = (
                time.perf_counter(),
                time.process_time(),
                time.thread_time(),
                timers.snapshot(),
            )
            delta = {f"{k}/{lab}": v - last[3].get((k, lab), 0.0) for (k, lab), v in snap.items()}
            keep = ("step_s", "rollout_s", "train_s", "sync_s")
            times = {
                "cycle_s": now - last[0],
                "cycle_cpu_s": cpu - last[1],
                "cycle_thread_cpu_s": mine - last[2],
            }
            cycles.append({"step": step, "timers": delta} | times | {k: metrics.get(k) for k in keep})
            last[:] = [now, cpu, mine, snap]

        profiler = None
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.001)
            profiler.start()
        start = time.perf_counter()
        train(cfg, on_step=on_step)
        total = time.perf_counter() - start
        tail = {f"{k}/{lab}": v - last[3].get((k, lab), 0.0) for (k, lab), v in timers.snapshot().items()}
        if profiler is not None:
            profiler.stop()
            Path(args.profile).write_text(profiler.output_html())
    return {"cycles": cycles, "after_last_step": tail, "total_s": total, "missing": timers.missing}


def spawn(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-breakdown-child-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--child", mode, "--child-out", str(out)]
        cmd += ["--config", str(args.config), "--steps", str(args.steps)]
        cmd += ["--profile", args.profile] if args.profile else []
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            sys.stderr.write((proc.stdout + proc.stderr)[-4000:])
            raise SystemExit(f"bench_step_breakdown: the {mode} run failed (exit {proc.returncode})")
        return json.loads(out.read_text())  # type: ignore[no-any-return]


def exclusive(timers: dict[str, float]) -> dict[str, float]:
    """Trainer-thread ('main') and producer-side seconds per label, nested timers subtracted."""
    out: dict[str, float] = defaultdict(float)
    for key, value in timers.items():
        kind, label = key.rsplit("/", 1)
        children = NESTED.get(label, ())
        inner = sum(timers.get(f"{kind}/{c}", 0.0) for c in children)
        out[f"{kind}/{label}"] += value - inner
    return dict(out)


def _trainer_thread(per_label: dict[str, float], prefix: str, cycle: float) -> dict[str, float]:
    """The trainer thread's cycle: model time, the wait for its batch (async: the sampling ahead did
    not hide), the timed rest, and what no timer covers (Python dispatch)."""
    mine = {k.removeprefix(prefix): v for k, v in per_label.items() if k.startswith(prefix)}
    model = sum(mine.get(m, 0.0) for m in MODEL)
    covered = sum(mine.values())
    timed = covered - model - mine.get("batch_wait", 0.0)
    dispatch = cycle - covered
    return {
        "model_s": model,
        "batch_wait_s": mine.get("batch_wait", 0.0),
        "non_model_timed_s": timed,
        "python_dispatch_s": dispatch,
        "non_model_share": (timed + dispatch) / cycle if cycle else 0.0,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per label: mean seconds per step (amortized: checkpoints and curves every N steps count) and
    its share of the mean cycle; model = sampling + trainer, wherever they ran."""
    cycles = [c for r in runs for c in r["cycles"][1:]]  # step 1 is warm-up
    mean_cycle = statistics.fmean(c["cycle_s"] for c in cycles)
    labels: dict[str, list[float]] = defaultdict(list)
    for c in cycles:
        ex = exclusive(c["timers"])
        for key in {k for cc in cycles for k in exclusive(cc["timers"])}:
            labels[key].append(ex.get(key, 0.0))
    per_label = {k: statistics.fmean(v) for k, v in sorted(labels.items())}
    thread_cpu = statistics.fmean(c["cycle_thread_cpu_s"] for c in cycles)
    return {
        "steps_measured": len(cycles),
        "median_cycle_s": statistics.median(c["cycle_s"] for c in cycles),
        "mean_cycle_s": mean_cycle,
        "mean_cycle_cpu_s": statistics.fmean(c["cycle_cpu_s"] for c in cycles),
        "mean_cycle_thread_cpu_s": thread_cpu,
        "per_label_mean_s": per_label,
        "trainer_thread": _trainer_thread(per_label, "main/", mean_cycle),
        # the trainer thread's own CPU: robust to machine load; torch's other threads are not in it
        "trainer_thread_cpu": _trainer_thread(per_label, "cpu:main/", thread_cpu),
        "after_last_step_s": {k: v for k, v in exclusive(runs[0]["after_last_step"]).items() if v > 1e-4},
        "missing_timers": runs[0]["missing"],
    }


def report(result: dict[str, Any]) -> None:
    print(f"bench_step_breakdown: {result['config']}, load {result['loadavg_1min_before_after']}")
    for mode, s in result["modes"].items():
        t = s["trainer_thread"]
        print(
            f"  [{mode}] cycle median {s['median_cycle_s'] * 1000:.1f} ms, "
            f"mean {s['mean_cycle_s'] * 1000:.1f} ms "
            f"(CPU {s['mean_cycle_cpu_s'] * 1000:.1f} ms); non-model on the trainer thread "
            f"{t['non_model_share'] * 100:.1f}% (timed {t['non_model_timed_s'] * 1000:.1f} ms + dispatch "
            f"{t['python_dispatch_s'] * 1000:.1f} ms), batch wait {t['batch_wait_s'] * 1000:.1f} ms"
        )
        c = s["trainer_thread_cpu"]
        print(
            f"      trainer thread CPU {s['mean_cycle_thread_cpu_s'] * 1000:.1f} ms: "
            f"model {c['model_s'] * 1000:.1f} ms, "
            f"non-model {c['non_model_share'] * 100:.1f}% (timed {c['non_model_timed_s'] * 1000:.1f} ms + "
            f"dispatch {c['python_dispatch_s'] * 1000:.1f} ms)"
        )
        for key, value in sorted(s["per_label_mean_s"].items(), key=lambda kv: -kv[1]):
            if value >= 5e-5:
                print(f"      {key:28} {value * 1000:8.2f} ms/step  {value / s['mean_cycle_s'] * 100:5.1f}%")
        if s["missing_timers"]:
            print(f"      timers not found: {', '.join(s['missing_timers'])}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "demo.toml")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument(
        "--modes",
        default="default,default@1,async",
        help="default (the config as written), serial (0), async (1); '@N': N torch threads",
    )
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--profile", help="write a pyinstrument HTML profile of the (last) run here")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench_step_breakdown.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.child_out.write_text(json.dumps(run_child(args)))
        return 0
    modes = args.modes.split(",")
    load = [os.getloadavg()[0]]
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:  # alternate: drift in machine load hits every mode alike
            runs[mode].append(spawn(mode, args))
    load.append(os.getloadavg()[0])
    result = {
        "config": str(args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config),
        "steps": args.steps,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "loadavg_1min_before_after": [round(x, 2) for x in load],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "modes": {m: summarize(rs) for m, rs in runs.items()},
    }
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"  wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
