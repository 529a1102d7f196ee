"""The vLLM backend's step on a real model, rollout and training apart (issue 29): rerun it whenever the
engine path changes (rollout/vllm_backend.py, sizing, factory, engine options), so a regression shows.

Case: SmolLM2-135M-Instruct (`builtin:smollm2`), environment `shout`, 4 prompts x 8 completions x <= 24
tokens, LoRA r16 a32 on all linear projections, fp32, 2 torch threads, `rollout.backend = "vllm"`,
serial steps (max_async_level 0: sampling and training each have the machine to themselves). Each
variant (`--variants`: `default`, or `;`-separated config overrides such as
`rollout.cpu_kv_cache_gib=0.1`) runs in its own subprocess, alternating over `--rounds`; step 1 is
warm-up and left out.

Besides wall time (which other jobs on a shared machine inflate) it records what load does not move:
the CPU seconds of each sampling call, the engine steps it took and the most sequences the engine ran
at once, and how many full-context sequences the KV cache holds (`kv_sequences`). A step's 32
sequences should run in one wave: ~25 engine steps, 32 at once. In two waves (issue 29: the KV cache
sized per token held 17), sampling took ~2x the CPU.

    .venv/bin/python scripts/bench_vllm_step.py [--steps 4] [--rounds 2] [--variants default]
        [--out docs/bench_vllm_step.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROMPTS, GROUP, MAX_TOKENS, THREADS = 4, 8, 24, 2


def _config(model: str, steps: int, out_dir: str, overrides: list[str]) -> Any:
    from rltrain.config import apply_overrides, parse_config

    data = {
        "model": model,
        "max_steps": steps,
        "batch_size": PROMPTS * GROUP,
        "rollouts_per_example": GROUP,
        "learning_rate": 3e-4,
        "max_async_level": 0,
        "sampling": {"max_tokens": MAX_TOKENS, "temperature": 1.0},
        "env": [{"id": "shout"}],
        "lora": {"rank": 16, "alpha": 32, "target_modules": TARGETS},
        "rollout": {"backend": "vllm"},
        "run": {"output_dir": out_dir, "seed": 0, "dtype": "float32", "device": "cpu"}
        | {"progress": False, "tensorboard": False},
    }
    pairs = [f"--{o}" for o in overrides]
    return parse_config(apply_overrides(data, pairs))


class EngineProbe:
    """Per sampling call: wall and process CPU seconds, engine steps, the most sequences at once."""

    def __init__(self) -> None:
        self.calls: list[dict[str, float]] = []
        self.backend: Any = None
        self._steps = 0
        self._most = 0

    def install(self) -> None:
        from vllm.v1.core.sched.scheduler import Scheduler

        from rltrain.rollout.vllm_backend import VLLMBackend

        probe, schedule, sample, init = self, Scheduler.schedule, VLLMBackend.sample, VLLMBackend.__init__

        def counted(sched: Any, *args: Any, **kwargs: Any) -> Any:
            out = schedule(sched, *args, **kwargs)
            if out.total_num_scheduled_tokens:
                probe._steps += 1
                probe._most = max(probe._most, len(out.num_scheduled_tokens))
            return out

        def timed(backend: Any, *args: Any, **kwargs: Any) -> Any:
            probe._steps = probe._most = 0
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return sample(backend, *args, **kwargs)
            finally:
                probe.calls.append(
                    {
                        "wall_s": time.perf_counter() - wall,
                        "cpu_s": time.process_time() - cpu,
                        "engine_steps": probe._steps,
                        "most_at_once": probe._most,
                    }
                )

        def kept(backend: Any, *args: Any, **kwargs: Any) -> None:
            init(backend, *args, **kwargs)
            probe.backend = backend

        Scheduler.schedule, VLLMBackend.sample, VLLMBackend.__init__ = counted, timed, kept  # type: ignore[method-assign,assignment]


def run_child(model: str, steps: int, overrides: list[str]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(THREADS)
    from rltrain.run import train

    probe = EngineProbe()
    probe.install()
    rows: list[dict[str, Any]] = []
    engine: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-vllm-step-") as tmp:
        cfg = _config(model, steps, tmp, overrides)

        def on_step(step: int, metrics: dict[str, Any]) -> None:
            keep = ("step_s", "rollout_s", "train_s", "sync_s", "vllm/generate_s", "output_tokens")
            # the step's sampling call: the last one of a long completion budget (not the landed check)
            calls = [c for c in probe.calls if c["engine_steps"] > 1]
            if probe.backend is not None and "kv_sequences" not in engine:  # while the engine is up
                engine["kv_sequences"] = probe.backend.kv_sequences
                engine["engine_kwargs"] = {
                    k: v for k, v in probe.backend.engine_kwargs.items() if k != "dtype"
                }
            rows.append(
                {"step": step, **{k: metrics.get(k) for k in keep}, "sample": calls[-1] if calls else {}}
            )

        train(cfg, on_step=on_step)
    return {"steps": rows, "engine": engine}


def spawn(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    with tempfile.TemporaryDirectory(prefix="bench-vllm-step-child-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--child", variant, "--child-out", str(out)]
        cmd += ["--model", args.model, "--steps", str(args.steps)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0 or not out.is_file():
            sys.stderr.write((proc.stdout + proc.stderr)[-4000:])
            raise SystemExit(f"bench_vllm_step: variant {variant!r} failed (exit {proc.returncode})")
        return json.loads(out.read_text())  # type: ignore[no-any-return]


def _median(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    steps = [s for r in runs for s in r["steps"][1:]]  # step 1: warm-up
    out: dict[str, Any] = {"steps_measured": len(steps)}
    for key in ("step_s", "rollout_s", "train_s", "sync_s", "vllm/generate_s", "output_tokens"):
        out[f"median_{key}"] = _median([s.get(key) for s in steps])
    for key in ("cpu_s", "engine_steps", "most_at_once"):
        out[f"median_sample_{key}"] = _median([s["sample"].get(key) for s in steps])
    out["engine"] = runs[0]["engine"]
    return out


def report(result: dict[str, Any]) -> None:
    print(f"bench_vllm_step: {result['description']}; load {result['loadavg_1min_before_after']}")
    head = f"  {'variant':28} {'step s':>7} {'rollout':>7} {'train':>7} {'gen CPU':>7}"
    print(head + f" {'steps':>5} {'at once':>7} {'kv seqs':>7}")
    for name, s in result["variants"].items():
        cells = [s["median_step_s"], s["median_rollout_s"], s["median_train_s"], s["median_sample_cpu_s"]]
        text = " ".join(f"{c:7.2f}" if c is not None else f"{'-':>7}" for c in cells)
        engine = f"{s['median_sample_engine_steps'] or 0:5.0f} {s['median_sample_most_at_once'] or 0:7.0f}"
        print(f"  {name:28} {text} {engine} {s['engine'].get('kv_sequences') or 0:7d}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:smollm2")
    ap.add_argument("--steps", type=int, default=4, help="steps per run (the first is warm-up)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--variants", default="default", help="comma-separated; each 'default' or 'key=value;key=value'"
    )
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench_vllm_step.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        overrides = [] if args.child == "default" else args.child.split(";")
        args.child_out.write_text(json.dumps(run_child(args.model, args.steps, overrides)))
        return 0
    variants = args.variants.split(",")
    load = [os.getloadavg()[0]]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:  # alternate: drift in machine load hits every variant alike
            runs[variant].append(spawn(variant, args))
    load.append(os.getloadavg()[0])
    result = {
        "description": (
            f"{args.model}, env shout, {PROMPTS} x {GROUP} x <= {MAX_TOKENS} tokens, LoRA r16 all linear, "
            f"fp32, {THREADS} threads, vLLM backend, serial; {args.steps} steps x {args.rounds} rounds, "
            "alternating"
        ),
        "cpus": os.cpu_count(),
        "loadavg_1min_before_after": [round(x, 2) for x in load],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "variants": {v: summarize(rs) for v, rs in runs.items()},
    }
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"  wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
