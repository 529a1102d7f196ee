"""rltrain vs TRL's GRPOTrainer, side by side (issues 8 and 18), on two cases:

- `tiny`: the tiny local Qwen3, reward = share of digit characters (environment `digits`), 1 prompt x 8
  completions x <=32 tokens per step, lr 1e-2;
- `smollm2`: SmolLM2-135M-Instruct (a real pretrained model, `builtin:smollm2`), reward = share of
  upper-case letters (environment `shout`), 4 prompts x 8 completions x <=24 tokens, lr 3e-4.

Both: LoRA r16 a32 on all linear projections, fp32, the same reward function and prompts for both
engines, each engine's defaults otherwise (TRL: beta 0, no vLLM; rltrain: the hf backend, as `auto`
picks on CPU). Engines: `rltrain` (its defaults: sampling one step ahead, max_async_level 1, loss
cispo), `rltrain-serial` (max_async_level 0, the same loss) and `trl`, each at every torch thread
count of the case (tiny: 1 and 2, since on a model that small one thread is often faster; smollm2:
2), on the same 2-core machine; rltrain's producer and trainer split the threads it is given (its CPU
default). Ratios compare TRL's fastest setting with each rltrain one. Runs alternate so drift in
machine load hits all; each run is its own subprocess so peak RSS is per engine. The first step of
every run is warm-up, left out of timings.

    .venv-bench/bin/python scripts/bench_vs_trl.py [--cases tiny,smollm2] [--steps 20] [--rounds 2]
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ENGINES = ("rltrain", "rltrain-serial", "trl")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GROUP, RANK, ALPHA = 8, 16, 32


@dataclass(frozen=True)
class Case:
    model: str  # an rltrain model name (resolved to a local directory for TRL)
    env: str  # the rltrain environment: its prompts and its reward function serve both engines
    reward: str  # the reward function's name in that environment's module
    prompts: int  # per step
    max_tokens: int
    lr: float
    threads: tuple[int, ...]  # torch thread counts every engine runs at


CASES = {
    "tiny": Case("builtin:tiny", "digits", "digit_fraction", 1, 32, 1e-2, (1, 2)),
    "smollm2": Case("builtin:smollm2", "shout", "upper_share", 4, 24, 3e-4, (2,)),
}
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


def run_rltrain(case: Case, steps: int, seed: int, ahead: int) -> dict[str, Any]:
    """The public engine end to end; per-step numbers come from the run's own metrics.jsonl."""
    from rltrain.config import parse_config
    from rltrain.run import train

    # step_s stops before the record and metrics writes; the gap between two on_step calls (after the
    # step is recorded) is the whole loop iteration, like TRL's on_step_end to on_step_end.
    stamps: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-rltrain-") as tmp:
        cfg = parse_config(
            {
                "model": case.model,
                "max_steps": steps,
                "batch_size": GROUP * case.prompts,
                "rollouts_per_example": GROUP,
                "learning_rate": case.lr,
                "max_async_level": ahead,
                "sampling": {"max_tokens": case.max_tokens, "temperature": 1.0},
                "env": [{"id": case.env}],
                "lora": {"rank": RANK, "alpha": ALPHA, "target_modules": TARGETS},
                "algorithm": {"variant": "cispo"},
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
        "train_s": [r["train_s"] for r in rows],
        "rollout_wait_s": [r["rollout_s"] for r in rows],
        "pad_frac": [r["pad_frac"] for r in rows],
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


def _trl_args(case: Case, out_dir: str, steps: int, seed: int) -> Any:
    from trl import GRPOConfig

    # the case's prompts x 8 generations per step, beta 0 (no reference model), no vLLM, fp32 on CPU
    sizes = dict(per_device_train_batch_size=GROUP * case.prompts, num_generations=GROUP)
    sizes |= dict(max_completion_length=case.max_tokens)
    plain = dict(beta=0.0, use_vllm=False, bf16=False, use_cpu=True, report_to=[], save_strategy="no")
    run = dict(output_dir=out_dir, max_steps=steps, seed=seed, logging_steps=1, disable_tqdm=True)
    return GRPOConfig(learning_rate=case.lr, **sizes, **plain, **run)


def run_trl(case: Case, steps: int, seed: int) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    from rltrain.envs.loader import load_rltrain_environment, resolve_module
    from rltrain.models import resolve_model_path

    score = getattr(resolve_module(case.env), case.reward)  # the very reward function rltrain uses

    def reward(completions: list[list[dict[str, str]]], **kwargs: Any) -> list[float]:
        return [score(c[-1]["content"]) for c in completions]

    # the environment's own prompts, as chat messages so TRL applies the chat template
    rows = load_rltrain_environment(case.env, {}).rows
    prompts = Dataset.from_list([{"prompt": r.prompt} for r in rows])
    path = resolve_model_path(case.model)
    timer = _step_timer()
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as tmp:
        trainer = GRPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(path, dtype="float32"),
            reward_funcs=reward,
            args=_trl_args(case, tmp, steps, seed),
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
        "completion_tokens": [log["completions/mean_length"] * GROUP * case.prompts for log in timer.logs],
    }


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.child_threads)
    case = CASES[args.case]
    if args.child == "trl":
        result = run_trl(case, args.steps, args.seed)
    else:
        result = run_rltrain(case, args.steps, args.seed, ahead=0 if args.child == "rltrain-serial" else 1)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB
    args.child_out.write_text(
        json.dumps(result | {"engine": args.child, "seed": args.seed, "peak_rss_mib": rss})
    )


def spawn(engine: str, case: str, threads: int, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One run in a fresh interpreter (peak RSS per engine, no shared caches). The thread count is set
    with torch.set_num_threads in the child; OMP_NUM_THREADS stays unset, as a user would leave it."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["TOKENIZERS_PARALLELISM"] = "false"
    with tempfile.TemporaryDirectory(prefix="bench-child-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--child", engine, "--case", case, "--steps", str(args.steps)]
        cmd += ["--seed", str(seed), "--child-threads", str(threads), "--child-out", str(out)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            sys.stderr.write((proc.stdout + proc.stderr)[-4000:])
            raise SystemExit(f"bench_vs_trl: the {engine} run failed (exit {proc.returncode})")
        return json.loads(out.read_text())  # type: ignore[no-any-return]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def length_fit(tokens: list[float], steps: list[float], full_tokens: int) -> dict[str, float | None]:
    """Step time grows with what the policy writes: fixed cost + cost per completion token."""
    try:
        fit = statistics.linear_regression(tokens, steps)
    except statistics.StatisticsError:  # under two steps, or every step the same length
        return dict.fromkeys(("fit_fixed_s", "fit_per_token_s", "fit_full_length_step_s"))
    full = fit.intercept + fit.slope * full_tokens
    return {"fit_fixed_s": fit.intercept, "fit_per_token_s": fit.slope, "fit_full_length_step_s": full}


def summarize(engine: str, case: Case, runs: list[dict[str, Any]]) -> dict[str, Any]:
    # step 1 of each run is warm-up (first forward passes, allocator growth, lazy imports): left out
    steps = [s for r in runs for s in r["step_s"][1:]]
    tokens = [t for r in runs for t in r["completion_tokens"][1:]]
    curve = [round(statistics.fmean(v), 4) for v in zip(*[r["reward"] for r in runs], strict=True)]
    out = {
        "engine": engine,
        "median_step_s": median(steps),
        # gap k runs from the end of step k+1 to the end of step k+2: warm-up is already out
        "median_cycle_s": median([c for r in runs for c in r["cycle_s"]]),
        "median_cycle_cpu_s": median([c for r in runs for c in r["cycle_cpu_s"]]),
        "completion_tok_s": sum(tokens) / sum(steps) if steps else None,
        **length_fit(tokens, steps, GROUP * case.prompts * case.max_tokens),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "reward_curve": curve,
        "runs": runs,
    }
    for key in ("train_s", "rollout_wait_s", "pad_frac"):  # rltrain's own metrics
        if key in runs[0]:
            out[f"median_{key}"] = median([v for r in runs for v in r[key][1:]])
    return out


def _ratio(slow: dict[str, Any], fast: dict[str, Any], key: str) -> float | None:
    a, b = slow.get(key), fast.get(key)
    return a / b if a and b else None


def _cell(value: float | None, fmt: str) -> str:
    return format(value, fmt) if value is not None else format("-", ">" + fmt.split(".")[0])


def report(name: str, result: dict[str, Any]) -> None:
    st = result["settings"]
    load = st["loadavg_1min_before_after"]
    print(f"bench_vs_trl [{name}]: {st['description']}; {st['cpus']} CPUs, load {load}")
    print("  medians leave out each run's first step; cycle = step + logging (wall, CPU); @full = fitted")
    print(f"  {'engine':17} {'s/step':>8} {'cycle':>8} {'cpu':>8} {'@full':>8} {'tok/s':>7} {'RSS MiB':>7}")
    for s in result["engines"].values():
        keys = ("median_step_s", "median_cycle_s", "median_cycle_cpu_s", "fit_full_length_step_s")
        cells = " ".join(_cell(s[k], "8.4f") for k in keys)
        print(f"  {s['engine']:17} {cells} {_cell(s['completion_tok_s'], '7.0f')} {s['peak_rss_mib']:7.0f}")
    for s in result["engines"].values():
        curve = [f"{r:.2f}" for r in s["reward_curve"]]
        print(f"  {s['engine']:17} reward first 5: {' '.join(curve[:5])}  last 5: {' '.join(curve[-5:])}")
    for pair, ratios in result["ratios"].items():
        for key, value in ratios.items():
            if value is not None:
                print(f"  {pair}, {key}: {value:.2f}x")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="tiny,smollm2", help="comma-separated: " + ",".join(CASES))
    ap.add_argument("--steps", type=int, default=20, help="steps per run (the first is warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (each runs every engine)")
    ap.add_argument(
        "--threads", help="torch thread counts for every case, e.g. 2 or 1,2 (default: the case's)"
    )
    ap.add_argument("--only", choices=ENGINES, action="append", help="run these engines only")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench_vs_trl.json")
    ap.add_argument("--seed", type=int, default=0, help="seed of round 1; round k uses seed + k - 1")
    ap.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    ap.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child-threads", type=int, default=1, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def bench_case(name: str, engines: list[str], args: argparse.Namespace) -> dict[str, Any]:
    case = CASES[name]
    threads = [int(t) for t in args.threads.split(",")] if args.threads else case.threads
    labels = {f"{e}@{t}": (e, t) for e in engines for t in threads}
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    load = [os.getloadavg()[0]]  # other jobs on the machine inflate wall time: keep the evidence
    for k in range(args.rounds):
        for label, (engine, threads) in labels.items():  # alternate: drift in load hits all alike
            runs[label].append(spawn(engine, name, threads, args, args.seed + k))
    load.append(os.getloadavg()[0])
    summary = {label: summarize(label, case, rs) for label, rs in runs.items()}
    trl = [label for label in labels if labels[label][0] == "trl"]
    best = min(trl, key=lambda label: summary[label]["median_step_s"] or float("inf")) if trl else None
    keys = ("median_step_s", "median_cycle_s", "fit_full_length_step_s")
    ratios = {}
    for label in labels:
        if best is not None and labels[label][0] != "trl":
            ratios[f"{best} / {label}"] = {k: _ratio(summary[best], summary[label], k) for k in keys}
    desc = (
        f"{case.model}, env {case.env}, {case.prompts} prompt(s) x {GROUP} completions x <={case.max_tokens} "
        f"tokens, LoRA r{RANK} a{ALPHA} all linear, fp32, torch threads {threads}, lr {case.lr:g}; "
        f"{args.steps} steps x {args.rounds} rounds, alternating"
    )
    settings = {"description": desc, "steps": args.steps, "rounds": args.rounds, "seed": args.seed}
    settings |= {"cpus": os.cpu_count(), "loadavg_1min_before_after": load}
    return {
        "settings": settings | {"warmup_steps_excluded": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S")},
        "ratios": ratios,
        "engines": summary,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    engines = args.only or list(ENGINES)
    if "trl" in engines and importlib.util.find_spec("trl") is None:
        print(INSTALL_HINT)
        return 2
    results = {}
    for name in args.cases.split(","):
        results[name] = bench_case(name, engines, args)
        report(name, results[name])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"  wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
