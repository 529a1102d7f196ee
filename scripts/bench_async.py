"""Serial vs async training side by side in one run (CPU): max_async_level 0 against 1.

Two environments on the tiny model: `digits` as it is (plain), and the same task behind a judge that
waits (a group reward that sleeps, as an LLM judge or a sandbox does), its wait set to the trainer's
measured step time. Runs alternate (serial, async, serial, async ...). Reported per configuration:
steps/s, the share of the trainer's time during which the producer was sampling and scoring (hidden
work), staleness, and the reward curve (learning must match serial within noise).

    .venv/bin/python scripts/bench_async.py [--steps 20] [--repeats 2] [--out docs/bench_async.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

JUDGE = """
import time
import rltrain

def digit_share(completions: list[str]) -> list[float]:
    time.sleep({wait})  # the judge: one call per group, waiting as a remote model or a sandbox would
    out = []
    for c in completions:
        chars = [x for x in c if not x.isspace()]
        out.append(sum(x.isdigit() for x in chars) / len(chars) if chars else 0.0)
    return out

def load_environment():
    rows = [{{"question": f"Write a number. ({{i}})"}} for i in range(64)]
    return rltrain.Environment(rows, [digit_share])
"""


def config(env: dict[str, Any], ahead: int, steps: int, out_dir: str, seed: int) -> dict[str, Any]:
    return {
        "model": "builtin:tiny",
        "max_steps": steps,
        "batch_size": 32,
        "rollouts_per_example": 8,
        "learning_rate": 1e-2,
        "max_async_level": ahead,
        "sampling": {"max_tokens": 24},
        "env": [env],
        "algorithm": {"variant": "cispo"},
        "rollout": {"backend": "hf"},
        "scoring": {"workers": 4},
        "lora": {"rank": 16, "alpha": 32},  # as configs/demo.toml
        "run": {"output_dir": out_dir, "progress": False, "tensorboard": False, "seed": seed},
    }


def one_run(env: dict[str, Any], ahead: int, steps: int, seed: int = 0) -> dict[str, Any]:
    from rltrain.config import parse_config
    from rltrain.run import train

    threads = torch.get_num_threads()  # an async run on CPU halves it for itself: each run starts equal
    with tempfile.TemporaryDirectory(prefix="bench-async-") as tmp:
        start = time.perf_counter()
        run = train(parse_config(config(env, ahead, steps, tmp, seed)))
        wall = time.perf_counter() - start
        rows = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    torch.set_num_threads(threads)
    if run.record.status != "succeeded":
        raise RuntimeError(f"run failed: {run.record.data.get('error')}")
    steady = rows[2:]  # past engine start-up and the first batches
    busy = sum(r["train_s"] + r["sync_s"] for r in steady)
    hidden = sum(max(r.get("produce_s", 0.0) - r["rollout_s"], 0.0) for r in steady)
    rewards = [r["reward_mean"] for r in rows]
    return {
        "steps_per_s": len(steady) / sum(r["step_s"] for r in steady),
        "wall_s": wall,
        "overlap_share": hidden / busy if busy else 0.0,
        "train_s": statistics.median(r["train_s"] for r in steady),
        "rollout_wait_s": statistics.median(r["rollout_s"] for r in steady),
        "staleness_mean": statistics.mean(r["staleness_mean"] for r in rows),
        "staleness_max": max(r["staleness_max"] for r in rows),
        "reward_first3": sum(rewards[:3]) / 3,
        "reward_last3": sum(rewards[-3:]) / 3,
        "rewards": rewards,
        "steps_to_0.9": next((i + 1 for i, r in enumerate(rewards) if r >= 0.9), None),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("bench_async.json"))
    args = p.parse_args(argv)
    plain = {"id": "digits"}
    probe = one_run(plain, 0, 6)  # the trainer's step time sets the judge's wait
    wait = round(probe["train_s"], 2)
    with tempfile.TemporaryDirectory(prefix="bench-async-env-") as envs:
        judge_file = Path(envs) / "slow_judge.py"
        judge_file.write_text(JUDGE.format(wait=wait))
        envs_by_name = {"plain": plain, "slow-judge": {"id": str(judge_file)}}
        results: dict[str, list[dict[str, Any]]] = {}
        for seed in range(args.repeats):  # a seed per repeat: the curves' spread is the noise
            for name, env in envs_by_name.items():
                for ahead in (0, 1):
                    key = f"{name}/async{ahead}"
                    results.setdefault(key, []).append(one_run(env, ahead, args.steps, seed))
                    print(f"{key}: {results[key][-1]['steps_per_s']:.2f} steps/s", flush=True)
    summary = {}
    for key, runs in results.items():
        per_run = ("rewards", "steps_to_0.9")
        summary[key] = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k not in per_run}
        summary[key]["steps_to_0.9"] = [r["steps_to_0.9"] for r in runs]  # one per seed (None: never)
        summary[key]["rewards"] = [
            statistics.mean(vals) for vals in zip(*(r["rewards"] for r in runs), strict=True)
        ]
    for name in ("plain", "slow-judge"):
        serial, ahead = summary[f"{name}/async0"], summary[f"{name}/async1"]
        summary[f"{name}/speedup"] = {"async_over_serial": ahead["steps_per_s"] / serial["steps_per_s"]}
    report = {"judge_wait_s": wait, "steps": args.steps, "repeats": args.repeats, "summary": summary}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"judge wait per group: {wait} s (the serial trainer step)")
    head = ("config", "steps/s", "overlap", "train_s", "wait_s", "staleness", "reward first3 -> last3")
    head += ("steps to 0.9 per seed",)
    print("  ".join(head))
    for key, s in summary.items():
        if "steps_per_s" in s:
            print(
                f"{key:18} {s['steps_per_s']:7.2f} {s['overlap_share']:7.2f} {s['train_s']:7.2f} "
                f"{s['rollout_wait_s']:6.2f} {s['staleness_mean']:5.2f}/{s['staleness_max']:.0f} "
                f"{s['reward_first3']:.2f} -> {s['reward_last3']:.2f}  {s['steps_to_0.9']}"
            )
    for name in ("plain", "slow-judge"):
        print(f"{name}: async {summary[f'{name}/speedup']['async_over_serial']:.2f}x serial steps/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
