"""rltrain vs TRL's GRPOTrainer, side by side on the tiny local Qwen3 (issue 8).

Same model, reward (digit fraction), LoRA (r16 α32, all linear projections), 1 prompt × 8 completions
× ≤32 tokens per step, fp32, one thread, lr 1e-2; each engine's defaults otherwise (TRL: beta 0, no vLLM).
Runs alternate (rltrain, trl, rltrain, trl, ...) so drift in machine load hits both; each run is its own
subprocess so peak RSS is per engine. The first step of every run is warm-up and is left out of timings.

    .venv-bench/bin/python scripts/bench_vs_trl.py [--steps 20] [--rounds 2] [--out docs/bench_vs_trl.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ENGINES = ("rltrain", "trl")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GROUP, MAX_TOKENS, LR, RANK, ALPHA = 8, 32, 1e-2, 16, 32
INSTALL_HINT = (
    "bench_vs_trl: TRL is not installed in this Python; install the bench extra: python3 -m venv .venv-bench "
    "&& .venv-bench/bin/pip install --find-links /opt/wheels torch==2.13.0 "
    "&& .venv-bench/bin/pip install -e '.[bench]' (or run with --only rltrain)"
)


def clocks() -> tuple[float, float]:
    # CPU time next to wall time: on a shared machine other jobs inflate wall time, barely CPU time
    return time.perf_counter(), time.process_time()


def gaps(stamps: list[tuple[float, float]], which: int) -> list[float]:
    return [b[which] - a[which] for a, b in zip(stamps, stamps[1:], strict=False)]


def run_rltrain(steps: int, seed: int) -> dict[str, Any]:
    """The public engine end to end; per-step numbers come from the run's own metrics.jsonl."""
    from rltrain.config import parse_config
    from rltrain.run import train
    from rltrain.tiny import tiny_model_path

    # step_s stops before the record and metrics writes; the gap between two on_step calls (after the
    # step is recorded) is the whole loop iteration, like TRL's on_step_end to on_step_end.
    stamps: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-rltrain-") as tmp:
        cfg = parse_config(
            {
                "model": str(tiny_model_path("qwen3")),
                "max_steps": steps,
                "batch_size": GROUP,
                "rollouts_per_example": GROUP,
                "learning_rate": LR,
                "sampling": {"max_tokens": MAX_TOKENS, "temperature": 1.0},
                "env": [{"id": "digits"}],
                "lora": {"rank": RANK, "alpha": ALPHA, "target_modules": TARGETS},
                "rollout": {"backend": "hf"},
                "run": {"output_dir": tmp, "seed": seed, "dtype": "float32", "device": "cpu"}
                | {"progress": False, "tensorboard": False},
            }
        )
        run = train(cfg, on_step=lambda step, metrics: stamps.append(clocks()))
        rows = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    return {
        "step_s": [r["step_s"] for r in rows],
        "cycle_s": gaps(stamps, 0),
        "cycle_cpu_s": gaps(stamps, 1),
        "reward": [r["reward_mean"] for r in rows],
        "completion_tokens": [r["output_tokens"] for r in rows],
    }


def _step_timer() -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.begin: list[tuple[float, float]] = []
            self.end: list[tuple[float, float]] = []
            self.logs: list[dict[str, float]] = []

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.begin.append(clocks())

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.end.append(clocks())

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "reward" in logs:
                self.logs.append(dict(logs))

    return StepTimer()


def _trl_args(out_dir: str, steps: int, seed: int) -> Any:
    from trl import GRPOConfig

    # as the brief: 1 prompt x 8 generations, beta 0 (no reference model), no vLLM, fp32 on CPU
    sizes = dict(per_device_train_batch_size=GROUP, num_generations=GROUP, max_completion_length=MAX_TOKENS)
    plain = dict(beta=0.0, use_vllm=False, bf16=False, use_cpu=True, report_to=[], save_strategy="no")
    run = dict(output_dir=out_dir, max_steps=steps, seed=seed, logging_steps=1, disable_tqdm=True)
    return GRPOConfig(learning_rate=LR, **sizes, **plain, **run)


def run_trl(steps: int, seed: int) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    from rltrain.envs.loader import load_rltrain_environment, resolve_module
    from rltrain.tiny import tiny_model_path

    digit_fraction = resolve_module("digits").digit_fraction  # the very reward function rltrain uses

    def digits_reward(completions: list[list[dict[str, str]]], **kwargs: Any) -> list[float]:
        return [digit_fraction(c[-1]["content"]) for c in completions]

    # the digits environment's own prompts, as chat messages so TRL applies the chat template
    prompts = Dataset.from_list([{"prompt": r.prompt} for r in load_rltrain_environment("digits", {}).rows])
    path = str(tiny_model_path("qwen3"))
    timer = _step_timer()
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as tmp:
        trainer = GRPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(path, dtype="float32"),
            reward_funcs=digits_reward,
            args=_trl_args(tmp, steps, seed),
            train_dataset=prompts,
            processing_class=AutoTokenizer.from_pretrained(path),
            peft_config=LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, task_type="CAUSAL_LM"),
            callbacks=[timer],
        )
        trainer.train()
    return {
        "step_s": [e[0] - b[0] for b, e in zip(timer.begin, timer.end, strict=True)],
        "cycle_s": gaps(timer.end, 0),
        "cycle_cpu_s": gaps(timer.end, 1),
        "reward": [log["reward"] for log in timer.logs],
        "completion_tokens": [log["completions/mean_length"] * GROUP for log in timer.logs],
    }


def child(engine: str, steps: int, seed: int, out: Path) -> None:
    import torch

    torch.set_num_threads(1)
    result = (run_rltrain if engine == "rltrain" else run_trl)(steps, seed)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB
    out.write_text(json.dumps(result | {"engine": engine, "seed": seed, "peak_rss_mib": rss}))


def spawn(engine: str, steps: int, seed: int) -> dict[str, Any]:
    """One run in a fresh interpreter (peak RSS per engine, no shared caches), one thread everywhere."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="bench-child-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--child", engine, "--steps", str(steps), "--seed", str(seed)]
        proc = subprocess.run([*cmd, "--child-out", str(out)], env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            sys.stderr.write((proc.stdout + proc.stderr)[-4000:])
            raise SystemExit(f"bench_vs_trl: the {engine} run failed (exit {proc.returncode})")
        return json.loads(out.read_text())  # type: ignore[no-any-return]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def length_fit(tokens: list[float], steps: list[float]) -> dict[str, float | None]:
    """Step time grows with what the policy writes: fixed cost + cost per completion token."""
    try:
        fit = statistics.linear_regression(tokens, steps)
    except statistics.StatisticsError:  # under two steps, or every step the same length
        return dict.fromkeys(("fit_fixed_s", "fit_per_token_s", "fit_full_length_step_s"))
    full = fit.intercept + fit.slope * GROUP * MAX_TOKENS
    return {"fit_fixed_s": fit.intercept, "fit_per_token_s": fit.slope, "fit_full_length_step_s": full}


def summarize(engine: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    # step 1 of each run is warm-up (first forward passes, allocator growth, lazy imports): left out
    steps = [s for r in runs for s in r["step_s"][1:]]
    tokens = [t for r in runs for t in r["completion_tokens"][1:]]
    curve = [round(statistics.fmean(v), 4) for v in zip(*[r["reward"] for r in runs], strict=True)]
    return {
        "engine": engine,
        "median_step_s": median(steps),
        # gap k runs from the end of step k+1 to the end of step k+2: warm-up is already out
        "median_cycle_s": median([c for r in runs for c in r["cycle_s"]]),
        "median_cycle_cpu_s": median([c for r in runs for c in r["cycle_cpu_s"]]),
        "completion_tok_s": sum(tokens) / sum(steps) if steps else None,
        **length_fit(tokens, steps),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "reward_curve": curve,
        "runs": runs,
    }


def _ratio(summary: dict[str, Any], key: str) -> float | None:
    a, b = (summary.get(e, {}).get(key) for e in ("trl", "rltrain"))
    return a / b if a and b else None


def _cell(value: float | None, fmt: str) -> str:
    return format(value, fmt) if value is not None else format("-", ">" + fmt.split(".")[0])


def report(result: dict[str, Any]) -> None:
    st = result["settings"]
    print(f"bench_vs_trl: {st['description']}; {st['cpus']} CPUs, load {st['loadavg_1min_before_after']}")
    print("  medians leave out each run's first step (warm-up); cycle = step + logging, wall and CPU time;")
    print("  @256 = fitted s/step at full length (8 x 32 completion tokens)")
    print(f"  {'engine':8} {'s/step':>7} {'cycle':>7} {'cpu':>7} {'@256':>7} {'tok/s':>7} {'RSS MiB':>7}")
    for s in result["engines"].values():
        keys = ("median_step_s", "median_cycle_s", "median_cycle_cpu_s", "fit_full_length_step_s")
        cells = " ".join(_cell(s[k], "7.4f") for k in keys)
        print(f"  {s['engine']:8} {cells} {_cell(s['completion_tok_s'], '7.0f')} {s['peak_rss_mib']:7.0f}")
    for s in result["engines"].values():
        curve = [f"{r:.2f}" for r in s["reward_curve"]]
        print(f"  {s['engine']:8} reward first 5: {' '.join(curve[:5])}  last 5: {' '.join(curve[-5:])}")
    for key, value in result["ratios_trl_over_rltrain"].items():
        if value is not None:
            print(f"  ratio trl/rltrain, {key}: {value:.2f}x")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="steps per run (the first is warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (each runs every engine)")
    ap.add_argument("--only", choices=ENGINES, help="run one engine only")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench_vs_trl.json")
    ap.add_argument("--seed", type=int, default=0, help="seed of round 1; round k uses seed + k - 1")
    ap.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args.child, args.steps, args.seed, args.child_out)
        return 0
    engines = [args.only] if args.only else list(ENGINES)
    if "trl" in engines and importlib.util.find_spec("trl") is None:
        print(INSTALL_HINT)
        return 2
    runs: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
    load = [os.getloadavg()[0]]  # other jobs on the machine inflate wall time: keep the evidence
    for k in range(args.rounds):
        for engine in engines:  # alternate, so slow drift in machine load hits both engines alike
            runs[engine].append(spawn(engine, args.steps, args.seed + k))
    load.append(os.getloadavg()[0])
    summary = {e: summarize(e, rs) for e, rs in runs.items()}
    ratios = {
        k: _ratio(summary, k) for k in ("median_step_s", "median_cycle_cpu_s", "fit_full_length_step_s")
    }
    desc = (
        f"tiny Qwen3, 1 prompt x {GROUP} completions x <={MAX_TOKENS} tokens, LoRA r{RANK} a{ALPHA} "
        f"all linear, fp32, 1 thread, lr {LR:g}; {args.steps} steps x {args.rounds} rounds, alternating"
    )
    settings = {"description": desc, "steps": args.steps, "rounds": args.rounds, "seed": args.seed}
    settings |= {"cpus": os.cpu_count(), "loadavg_1min_before_after": load}
    result = {
        "settings": settings | {"warmup_steps_excluded": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S")},
        "ratios_trl_over_rltrain": ratios,
        "engines": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    report(result)
    print(f"  wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
