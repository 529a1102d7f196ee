"""Does sampling ahead cost learning? Serial (max_async_level = 0) against sampling ahead, per step and
per second, on the project's own tasks, over seeds (docs/benchmarks.md, "Learning under sampling ahead").

Tasks: the digits demo (configs/demo.toml), SmolLM2 `shout` (configs/smollm2.toml, 16 of its steps)
and guess-number (the multi-turn built-in, on the tiny model). Each run is a real `rltrain` training
run in its own process (a fresh thread setting and allocator each time), and for each seed the levels
alternate (0, 1, 0, 1, ...) so that a drift in the machine's load hits both. Recorded per run: the
reward curve and when each step ended, counted from the call to `train` (model load and engine start
included). The table gives the first step whose reward reaches the task's threshold, and the first
whose 3-step mean does, with its seconds.

    .venv/bin/python scripts/bench_learning.py --out docs/bench_learning.json        # all tasks, levels 0 1
    .venv/bin/python scripts/bench_learning.py --task digits --levels 1 --loss clip-on-mu --label digits-mu
    .venv/bin/python scripts/bench_learning.py --task digits --set batch_size=16 --label "digits b16"
    .venv/bin/python scripts/bench_learning.py --table docs/bench_learning.json      # the markdown table

Results accumulate in the --out file under their label (the task's name unless --label), saved after
each run; rerunning a label replaces it. `--levels default` runs the config with no max_async_level
(what the default settles to on this machine). `--loss clip-on-mu` runs the objective before issue 23.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# each task: its config file (or none), overrides, reward threshold, OMP threads (as a user runs it)
TASKS: dict[str, dict[str, Any]] = {
    "digits": {"config": "configs/demo.toml", "overrides": {}, "threshold": 0.9, "threads": 1},
    "shout": {
        "config": "configs/smollm2.toml",
        "overrides": {"max_steps": 16},
        "threshold": 0.5,
        "threads": 2,
    },
    "guess-number": {
        "config": None,
        "overrides": {
            "model": "builtin:tiny",
            "max_steps": 20,
            "batch_size": 16,
            "rollouts_per_example": 8,
            "learning_rate": 1e-2,
            "sampling": {"max_tokens": 8},
            "env": [{"id": "guess-number"}],
            "lora": {"rank": 16, "alpha": 32},
            "rollout": {"backend": "hf"},
        },
        "threshold": 0.6,
        "threads": 1,
    },
}


def _config(task: str, level: str, seed: int, out_dir: str, overrides: list[str]) -> dict[str, Any]:
    import tomllib

    from rltrain.config import apply_overrides

    spec = TASKS[task]
    data: dict[str, Any] = {}
    if spec["config"]:
        data = tomllib.loads((REPO / spec["config"]).read_text())
    data |= json.loads(json.dumps(spec["overrides"]))
    data.pop("max_async_level", None)
    if level != "default":
        data["max_async_level"] = int(level)
    run = data.setdefault("run", {})
    run |= {"output_dir": out_dir, "seed": seed, "progress": False, "tensorboard": False}
    data.setdefault("checkpoints", {})["interval"] = 0  # both sides equal: only the final one
    return apply_overrides(data, [f"--{o}" for o in overrides])


def _clip_on_mu() -> None:
    """The objective before issue 23, for comparison: the trust region centred on the sampler μ
    (π_prox := μ, so r = π_θ/μ and w = 1)."""
    from dataclasses import replace

    from rltrain.algo import loss
    from rltrain.trainer import step

    def centred_on_mu(inp: loss.LossInputs, cfg: loss.LossConfig, norm: loss.LossNorm) -> loss.LossOutputs:
        return loss.policy_loss(replace(inp, proximal_logprobs=inp.inference_logprobs), cfg, norm)

    step.policy_loss = centred_on_mu  # type: ignore[assignment]


def one_run(task: str, level: str, seed: int, opts: dict[str, Any]) -> dict[str, Any]:
    """In this process: train and time each step from the start of `train`."""
    from rltrain.config import parse_config
    from rltrain.run import train

    if opts["loss"] == "clip-on-mu":
        _clip_on_mu()
    stamps: dict[int, float] = {}  # step -> seconds since train() was called
    with tempfile.TemporaryDirectory(prefix="bench-learning-") as tmp:
        cfg = parse_config(_config(task, level, seed, tmp, opts["set"]))
        start = time.perf_counter()
        rec = train(cfg, on_step=lambda step, m: stamps.__setitem__(step, time.perf_counter() - start))
        wall = time.perf_counter() - start
        rows = [json.loads(line) for line in rec.metrics_path.read_text().splitlines()]
        resolved = json.loads((rec.run_dir / "config.json").read_text()).get("max_async_level")
    rows = [r for r in rows if "reward_mean" in r]
    if rec.record.status != "succeeded":
        raise RuntimeError(f"{task} level {level} seed {seed}: {rec.record.data.get('error')}")
    threshold = TASKS[task]["threshold"]
    rewards = [r["reward_mean"] for r in rows]
    hit = next((i for i, r in enumerate(rewards) if r >= threshold), None)
    return {
        "task": task,
        "level": level,
        "loss": opts["loss"],
        "set": opts["set"],
        "resolved_level": resolved,
        "seed": seed,
        "rewards": rewards,
        "step_s": [r["step_s"] for r in rows],
        "stamps_s": [stamps.get(int(r["step"])) for r in rows],
        "wall_s": wall,
        "threshold": threshold,
        "steps_to_threshold": None if hit is None else hit + 1,
        "seconds_to_threshold": None if hit is None else stamps.get(int(rows[hit]["step"])),
        "staleness_mean": statistics.mean(r["staleness_mean"] for r in rows),
        "stale_kl_mean": statistics.mean([r["stale_kl"] for r in rows if "stale_kl" in r] or [0.0]),
        "is_masked_frac_mean": statistics.mean(r["is_masked_frac"] for r in rows),
    }


def _spawn(task: str, level: str, seed: int, opts: dict[str, Any]) -> dict[str, Any]:
    env = os.environ | {"OMP_NUM_THREADS": str(opts.get("threads") or TASKS[task]["threads"])}
    cmd = [sys.executable, __file__, "--one", task, level, str(seed), "--opts", json.dumps(opts)]
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{task} level {level} seed {seed} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(lines[-1].removeprefix("RESULT ")))


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"


def run_task(
    task: str, levels: list[str], seeds: list[int], opts: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """Each run's result as it ends."""
    for seed in seeds:
        for level in levels:  # alternating: load drifts hit every level alike
            before = _load()
            r = _spawn(task, level, seed, opts) | {"load_before": before, "load_after": _load()}
            curve = " ".join(f"{x:.2f}" for x in r["rewards"])
            print(
                f"{task} level={level} seed={seed}: first >= {r['threshold']}: {r['steps_to_threshold']}, "
                f"wall {r['wall_s']:.0f} s, load {before}->{r['load_after']}, rewards {curve}",
                flush=True,
            )
            yield r


def _fmt(xs: list[Any]) -> str:
    return ", ".join("—" if x is None else f"{x:.0f}" for x in xs)


def _median(xs: list[Any]) -> str:
    """The median with a run that never reached the threshold counted as the slowest."""
    vals = sorted(xs, key=lambda x: float("inf") if x is None else x)
    mid = vals[len(vals) // 2]
    return "never" if mid is None else f"{mid:.0f}"


def reached(run: dict[str, Any], window: int) -> tuple[int | None, float | None]:
    """The first step (1-based) whose reward, averaged over it and the `window` − 1 steps before it,
    reaches the threshold, and the seconds from the start of training to its end."""
    r = run["rewards"]
    for i in range(window - 1, len(r)):
        if sum(r[i - window + 1 : i + 1]) / window >= run["threshold"]:
            return i + 1, run["stamps_s"][i]
    return None, None


def table(results: dict[str, Any]) -> str:
    lines = [
        "| task | level | steps to threshold: first step (per seed) | median | 3-step mean (per seed) "
        "| median | seconds, 3-step mean (per seed) | median | s/step (median) | load (1 min) |",
        "|" + "---|" * 10,
    ]
    for label, runs in results["tasks"].items():
        for level in sorted({r["level"] for r in runs}):
            rs = sorted((r for r in runs if r["level"] == level), key=lambda r: r["seed"])
            resolved = "/".join(sorted({str(r["resolved_level"]) for r in rs}))
            name = level if level != "default" else f"default (→ {resolved})"
            first = [reached(r, 1)[0] for r in rs]
            held = [reached(r, 3) for r in rs]
            per_step = statistics.median([s for r in rs for s in r["step_s"][2:]] or [float("nan")])
            loads = [float(x) for r in rs for x in (r["load_before"], r["load_after"])]
            cells = [
                f"{label} (≥ {rs[0]['threshold']})",
                name,
                _fmt(first),
                _median(first),
                _fmt([h[0] for h in held]),
                _median([h[0] for h in held]),
                _fmt([h[1] for h in held]),
                _median([h[1] for h in held]),
                f"{per_step:.2f}",
                f"{min(loads):.1f}–{max(loads):.1f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dump(results: dict[str, Any]) -> str:
    """The results as JSON with one line per run, floats to 4 decimals: small, and readable in a diff."""

    def short(x: Any) -> Any:
        if isinstance(x, float):
            return round(x, 4)
        if isinstance(x, list):
            return [short(v) for v in x]
        return {k: short(v) for k, v in x.items()} if isinstance(x, dict) else x

    lines = ["{"] + [f'"{k}": {json.dumps(v)},' for k, v in results.items() if k != "tasks"] + ['"tasks": {']
    for i, (label, runs) in enumerate(results["tasks"].items()):
        body = ",\n  ".join(json.dumps(short(r), ensure_ascii=False) for r in runs)
        lines.append(
            f" {json.dumps(label, ensure_ascii=False)}: [\n  {body}\n ]"
            + ("," if i < len(results["tasks"]) - 1 else "")
        )
    return "\n".join(lines + ["}}"]) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=sorted(TASKS), action="append")
    p.add_argument("--levels", nargs="+", default=["0", "1"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("docs/bench_learning.json"))
    p.add_argument("--table", type=Path, help="print the markdown table of a results file and exit")
    p.add_argument("--loss", choices=["decoupled", "clip-on-mu"], default="decoupled")
    p.add_argument(
        "--set", nargs="*", default=[], help="config overrides for every run: algorithm.variant=dapo"
    )
    p.add_argument("--label", help="the results' key (default: the task's name)")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS of every run (default: the task's)")
    p.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--opts", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        task, level, seed = args.one
        print("RESULT " + json.dumps(one_run(task, level, int(seed), json.loads(args.opts))), flush=True)
        return 0
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    results = json.loads(args.out.read_text()) if args.out.exists() else {"tasks": {}}
    opts = {"loss": args.loss, "set": args.set, "threads": args.threads}
    for task in args.task or list(TASKS):
        label = args.label or task
        results["tasks"][label] = []
        for run in run_task(task, args.levels, args.seeds, opts):  # saved as each run ends
            results["tasks"][label].append(run)
            results.setdefault("measured", {})[label] = {"date": time.strftime("%Y-%m-%d %H:%M %Z")}
            args.out.write_text(dump(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
