"""How a full rltrain step's cost grows with group size and completion length, per backend (issue 8).

Real runs through `rltrain.run.train` on the tiny local Qwen3 (fp32, one thread, LoRA r16 on all
linear projections, environment `digits`, 1 prompt per step). Two sweeps from a shared base point:
group size 8 -> 16 -> 32 at 32 tokens, and max_tokens 32 -> 128 -> 512 at group 8. Per run the
numbers are medians over steps 2..N of the run's own metrics.jsonl (step 1 is warm-up).

The tiny model often ends a completion early, so by default the stop tokens are switched off for the
benchmark (`--natural-stops` keeps them): completions are then exactly max_tokens long and the length
sweep measures length, not the model's stopping habits. Either way the measured mean completion
length is reported, and growth is fitted against measured output tokens: cost ∝ tokens^k, k = 1 is
linear. Runs alternate backends (hf, vllm, vllm, hf, ...) so drift in machine load hits both, and the
whole sweep repeats `--rounds` times (default 3; ~6-7 min on a loaded 2-core VM): medians of rounds.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_scaling.py [--steps 5] [--out docs/bench_scaling.json]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads: one thread suits the tiny model
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
KEYS = ("step_s", "rollout_s", "train_s", "sync_s", "gen_tok_s", "output_tokens", "completion_len_mean")
COSTS = ("step_s", "step_cpu_s", "rollout_s", "train_s")
SHARES = ("rollout_s", "train_s", "sync_s")


def disable_stops() -> None:
    """Benchmark only: no stop tokens, so every completion runs to max_tokens on both backends."""
    from rltrain.rollout import prompting

    prompting.stop_token_ids = lambda tokenizer, eos: ()  # type: ignore[assignment]
    if importlib.util.find_spec("vllm") is None:
        return
    from rltrain.rollout.vllm_backend import VLLMBackend

    plain = VLLMBackend._vllm_params

    def no_eos(self: VLLMBackend, sampling: Any, n: int, seed: int | None) -> Any:
        params = plain(self, sampling, n, seed)
        params.ignore_eos = True  # an empty stop list still stops at the model's EOS in vLLM
        return params

    VLLMBackend._vllm_params = no_eos  # type: ignore[method-assign]


def run_config(backend: str, group: int, max_tokens: int, steps: int, out_dir: str) -> dict[str, Any]:
    from rltrain.tiny import tiny_model_path

    return {
        "model": str(tiny_model_path("qwen3")),
        "max_steps": steps,
        "batch_size": group,  # one prompt per step
        "rollouts_per_example": group,
        "learning_rate": 1e-2,
        "sampling": {"max_tokens": max_tokens, "temperature": 1.0},
        "env": [{"id": "digits"}],
        "lora": {"rank": 16, "alpha": 32, "target_modules": TARGETS},
        "rollout": {"backend": backend},
        "run": {
            "output_dir": out_dir,
            "progress": False,
            "tensorboard": False,
            "seed": 0,
            "dtype": "float32",
        },
    }


def one_run(backend: str, group: int, max_tokens: int, steps: int, stamps: list[float]) -> dict[str, Any]:
    """Train `steps` steps; medians of the per-step metrics over steps 2..N."""
    from rltrain.config import parse_config
    from rltrain.run import train

    first = len(stamps)
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        start = time.perf_counter()
        # process CPU time after every recorded step: on a shared 2-core machine other jobs inflate wall
        # time, barely CPU time (one torch thread; vLLM in-process). Two stamps apart is one whole step.
        session = train(
            parse_config(run_config(backend, group, max_tokens, steps, tmp)),
            on_step=lambda step, metrics: stamps.append(time.process_time()),
        )
        wall = time.perf_counter() - start
        lines = (session.run_dir / "metrics.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
    if session.record.status != "succeeded" or len(rows) != steps:
        raise RuntimeError(f"{backend} group {group} x {max_tokens}: run {session.record.status}")
    kept = [r for r in rows if r["step"] >= 2]
    out: dict[str, Any] = {"backend": backend, "group": group, "max_tokens": max_tokens, "steps": steps}
    out.update({k: statistics.median(r[k] for r in kept) for k in KEYS})
    out["truncated_frac"] = statistics.median(r["truncated_frac"] for r in kept)
    mine = stamps[first:]
    out["step_cpu_s"] = statistics.median(b - a for a, b in zip(mine, mine[1:], strict=False))  # steps 2..N
    out["run_wall_s"] = round(wall, 2)  # model load, engine start-up and the final checkpoint included
    out["per_step"] = {k: [round(r[k], 4) for r in rows] for k in ("step_s", "rollout_s", "train_s")}
    return out


def exponent(rows: list[dict[str, Any]], key: str) -> float:
    """Least-squares slope of log(cost) on log(output tokens): cost ∝ tokens^k."""
    xs = [math.log(r["output_tokens"]) for r in rows]
    ys = [math.log(max(r[key], 1e-9)) for r in rows]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else float("nan")


def growth(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Cost ratios against the sweep's first point next to the token ratio, and the fitted exponents."""
    base = rows[0]
    ratios = [
        {
            "tokens": r["output_tokens"] / base["output_tokens"],
            **{k: r[k] / base[k] for k in COSTS},
        }
        for r in rows
    ]
    fits = {k: exponent(rows, k) for k in COSTS}
    # pairwise exponents between neighbouring points: an overall k near 1 can hide a superlinear tail
    segments = [exponent([a, b], "step_cpu_s") for a, b in zip(rows, rows[1:], strict=False)]
    k, tail = fits["step_cpu_s"], segments[-1] if segments else float("nan")
    # CPU time: wall time on this shared machine is the noisier of the two; 1.1, not 1.0, for that noise
    if math.isnan(k):
        verdict = "n/a (one point)"
    elif k > 1.1:
        verdict = "worse than linear"
    else:
        verdict = "linear or better" + (f"; superlinear at the long end (k={tail:.2f})" if tail > 1.1 else "")
    return {"ratios_to_first": ratios, "exponent_k": fits, "segment_k_cpu": segments, "step_cost": verdict}


def points(groups: list[int], lengths: list[int]) -> list[tuple[int, int]]:
    """Distinct (group, max_tokens) runs: the group sweep at the first length, the length sweep at the
    first group (they share the base point)."""
    wanted = [(g, lengths[0]) for g in groups] + [(groups[0], n) for n in lengths]
    return list(dict.fromkeys(wanted))


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One point from several rounds: the median of each run's medians; the rounds' step_s kept."""
    out = dict(runs[0])
    keys = (*KEYS, "step_cpu_s", "truncated_frac", "run_wall_s")
    out.update({k: statistics.median(r[k] for r in runs) for k in keys})
    out["rounds_step_s"] = [round(r["step_s"], 4) for r in runs]
    out["per_step"] = [r["per_step"] for r in runs]
    return out


def run_all(args: argparse.Namespace) -> dict[str, dict[tuple[int, int], dict[str, Any]]]:
    runs: dict[str, dict[tuple[int, int], list[dict[str, Any]]]] = {b: {} for b in args.backends}
    stamps: list[float] = []
    for rnd in range(args.rounds):
        for i, (group, max_tokens) in enumerate(points(args.groups, args.lengths)):
            order = args.backends if (i + rnd) % 2 == 0 else list(reversed(args.backends))
            for backend in order:
                row = one_run(backend, group, max_tokens, args.steps, stamps)
                runs[backend].setdefault((group, max_tokens), []).append(row)
                print(
                    f"  round {rnd + 1} {backend:>4}  group {group:>3} x {max_tokens:>4} tokens: step "
                    f"{row['step_s']:.3f} s (rollout {row['rollout_s']:.3f}, train {row['train_s']:.3f}), "
                    f"mean length {row['completion_len_mean']:.1f}, load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    return {b: {pt: combine(rows) for pt, rows in pts.items()} for b, pts in runs.items()}


def analyse(args: argparse.Namespace, results: dict[str, dict[tuple[int, int], dict[str, Any]]]) -> dict:
    out: dict[str, Any] = {}
    for backend, rows in results.items():
        group_rows = [rows[(g, args.lengths[0])] for g in args.groups]
        length_rows = [rows[(args.groups[0], n)] for n in args.lengths]
        out[backend] = {
            "group_sweep": {"rows": group_rows, **growth(group_rows)},
            "length_sweep": {"rows": length_rows, **growth(length_rows)},
        }
    return out


def print_tables(report: dict[str, Any]) -> None:
    print(
        f"{'backend':>7} {'sweep':>6} {'group':>5} {'max_tok':>7} {'len':>6} {'step s':>7} {'cpu s':>7} "
        f"{'rollout':>7} {'train':>7} {'sync':>6} {'gen tok/s':>9} {'step x':>6} {'cpu x':>6} {'tok x':>6}"
    )
    for backend, sw in report["sweeps"].items():
        for name in ("group_sweep", "length_sweep"):
            for r, ratio in zip(sw[name]["rows"], sw[name]["ratios_to_first"], strict=True):
                print(
                    f"{backend:>7} {name.split('_')[0]:>6} {r['group']:>5} {r['max_tokens']:>7} "
                    f"{r['completion_len_mean']:>6.1f} {r['step_s']:>7.3f} {r['step_cpu_s']:>7.3f} "
                    f"{r['rollout_s']:>7.3f} {r['train_s']:>7.3f} {r['sync_s']:>6.3f} "
                    f"{r['gen_tok_s']:>9,.0f} {ratio['step_s']:>6.2f} {ratio['step_cpu_s']:>6.2f} "
                    f"{ratio['tokens']:>6.2f}"
                )
            k = sw[name]["exponent_k"]
            print(
                f"{'':>15}cost ∝ tokens^k: step k={k['step_s']:.2f} (cpu {k['step_cpu_s']:.2f}), "
                f"rollout k={k['rollout_s']:.2f}, train k={k['train_s']:.2f}: {sw[name]['step_cost']}"
            )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--groups", type=int, nargs="+", default=[8, 16, 32], help="rollouts_per_example")
    p.add_argument("--lengths", type=int, nargs="+", default=[32, 128, 512], help="sampling.max_tokens")
    p.add_argument("--steps", type=int, default=5, help="steps per run; medians over steps 2..N")
    p.add_argument("--rounds", type=int, default=3, help="repeats of the whole sweep, alternating order")
    p.add_argument("--backends", nargs="+", choices=["hf", "vllm"], default=None, help="default: all present")
    p.add_argument("--natural-stops", action="store_true", help="keep the stop tokens (lengths then vary)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "bench_scaling.json")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be at least 2 (step 1 is warm-up)")
    if args.backends is None:
        args.backends = ["hf"] + (["vllm"] if importlib.util.find_spec("vllm") else [])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.natural_stops:
        disable_stops()
    load_before, start = list(os.getloadavg()), time.perf_counter()
    results = run_all(args)
    settings = {
        k: getattr(args, k) for k in ("groups", "lengths", "steps", "rounds", "backends", "natural_stops")
    }
    settings |= {"model": "tiny qwen3 (fp32, 1 thread)", "env": "digits", "prompts_per_step": 1}
    settings |= {
        "lora": "r16 a32 all linear",
        "statistic": "median over rounds of the median over steps 2..N",
        "fit": "cost ∝ tokens^k",
    }
    report = {
        "settings": settings,
        "machine": {
            "date": datetime.date.today().isoformat(),
            "cpus": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "total_s": round(time.perf_counter() - start, 1),
        },
        "sweeps": analyse(args, results),
    }
    print_tables(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} ({report['machine']['total_s']} s, load {report['machine']['loadavg_after']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
