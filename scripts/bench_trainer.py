"""The trainer step alone, padded rows against packed rows, side by side (issue 18).

Padded: one row per sample, its prompt repeated, right-padded to the longest completion (the layout
before packing; `algorithm.pack_tokens = 0`). Packed: each prompt once with its completions after it,
no padding (trainer/packing.py; the default). Same samples, same gradients (tests/trainer/
test_packing.py): only the work differs. Synthetic GRPO batches of 4 prompts x group size samples,
completion lengths drawn between half and all of the budget, LoRA r16 on all linear projections,
fp32, micro-batches of 8. A base point and three sweeps from it (prompt length, group size,
completion length); per point the two layouts alternate, `--repeats` times after a warm-up step,
medians reported. Trained tok/s counts each sample's prompt and completion tokens once per sample
(the padded layout's real work, and what peers count), so the two layouts are comparable.

    .venv/bin/python scripts/bench_trainer.py [--models tiny,smollm2] [--repeats 3] \
        [--out docs/bench_trainer.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MODELS = {"tiny": "builtin:tiny", "smollm2": "builtin:smollm2"}
BASE = {"prompt": 48, "group": 8, "completion": 24}
SWEEPS = {"prompt": (16, 48, 192), "group": (4, 8, 16), "completion": (8, 24, 96)}


def points(model: str) -> list[dict[str, int]]:
    """The base point and the sweeps from it (SmolLM2: the base point and the prompt sweep, for time)."""
    out = [dict(BASE)]
    for key, values in SWEEPS.items():
        if model == "smollm2" and key != "prompt":
            continue
        out += [BASE | {key: v} for v in values if v != BASE[key]]
    return out


def samples(point: dict[str, int], vocab: int, seed: int) -> list[Any]:
    from rltrain.types import Sample

    rng = random.Random(seed)
    out = []
    for g in range(4):
        prompt = [rng.randrange(10, vocab) for _ in range(point["prompt"])]
        for _ in range(point["group"]):
            n = rng.randint(max(1, point["completion"] // 2), point["completion"])
            comp = [rng.randrange(10, vocab) for _ in range(n)]
            lps = [-rng.uniform(0.1, 3.0) for _ in comp]
            out.append(Sample(prompt, comp, lps, [1] * n, 0.0, rng.uniform(-1, 1), g))
    return out


def policy_for(model: str) -> tuple[Any, Any]:
    from rltrain.config import parse_config
    from rltrain.models import resolve_model_path
    from rltrain.trainer.model import load_policy
    from rltrain.trainer.step import TrainSettings

    cfg = {"model": MODELS[model], "max_steps": 1, "batch_size": 8, "rollouts_per_example": 8}
    cfg |= {"env": [{"id": "digits"}], "learning_rate": 1e-6, "lora": {"rank": 16, "alpha": 32}}
    cfg |= {"algorithm": {"variant": "dapo"}, "run": {"dtype": "float32", "device": "cpu"}}
    parsed = parse_config(cfg)
    return load_policy(parsed, resolve_model_path(parsed.model)), TrainSettings.from_config(parsed)


def measure(policy: Any, settings: Any, batch: list[Any], layouts: dict[str, int], repeats: int) -> dict:
    from rltrain.trainer.step import train_step

    times: dict[str, list[float]] = {name: [] for name in layouts}
    metrics: dict[str, dict[str, float]] = {}
    for k in range(repeats + 1):  # k = 0: warm-up
        for name, row_tokens in layouts.items():
            s = dataclasses.replace(settings, row_tokens=row_tokens)
            t0 = time.perf_counter()
            metrics[name] = train_step(policy, batch, s)
            if k:
                times[name].append(time.perf_counter() - t0)
    logical = sum(len(s.prompt_ids) + len(s.completion_ids) for s in batch)
    out = {}
    for name in layouts:
        step = statistics.median(times[name])
        m = metrics[name]
        out[name] = {
            "step_s": step,
            "trained_tok_s": logical / step,
            "forward_tokens": m["training_tokens"],
            "pad_frac": m["pad_frac"],
        }
    out["speedup"] = out["padded"]["step_s"] / out["packed"]["step_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="tiny,smollm2")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("bench_trainer.json"))
    args = p.parse_args(argv)
    import torch

    report: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "date": time.strftime("%Y-%m-%d"),
        "models": {},
    }
    for model in args.models.split(","):
        policy, settings = policy_for(model)
        vocab = int(policy.model.config.vocab_size)
        layouts = {"padded": 0, "packed": settings.row_tokens}
        rows = []
        for point in points(model):
            result = measure(policy, settings, samples(point, vocab, seed=0), layouts, args.repeats)
            rows.append(point | result)
            pad, pk = result["padded"], result["packed"]
            where = f"prompt {point['prompt']:4} group {point['group']:3} completion {point['completion']:4}"
            cells = [
                f"{name} {r['step_s'] * 1e3:8.1f} ms {r['trained_tok_s']:8.0f} tok/s pad {r['pad_frac']:.2f}"
                for name, r in (("padded", pad), ("packed", pk))
            ]
            print(f"{model:8} {where} | {' | '.join(cells)} | {result['speedup']:.2f}x", flush=True)
        report["models"][model] = rows
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
