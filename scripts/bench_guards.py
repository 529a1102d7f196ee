"""What the guards cost per step, against the step they watch (issue 28: under 2% of the tiny model's
step time).

Two parts run every step: the rollout statistics the guards read (rollout/signals.py: repetition and
flat groups over the step's records), and the loop's call, `LoopGuards.check` (Guards.observe with the
seven default guards, the decision, the row's entries), fed a 1,000-step metrics stream with an eval
every 10 steps; and, once per checkpoint, the guards' state it saves. Two sizes of step: the demo's
(32 completions of ~24 words) and a larger one (512 completions of ~300 words). The tiny model's step
time comes from a real serial demo run measured in the same process, before and after.

    .venv/bin/python scripts/bench_guards.py [--steps 30]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")


def records(completions: int, words: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(500)]
    return [
        {
            "env": "e",
            "group": i // 8,
            "reward": rng.random(),
            "completion": " ".join(rng.choices(vocab, k=words)),
        }
        for i in range(completions)
    ]


def stats_ms(recs: list[dict[str, Any]], repeats: int = 20) -> float:
    from rltrain.rollout.signals import flat_group_share, repetition

    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        repetition([r["completion"] for r in recs])
        flat_group_share(recs)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def check_ms(steps: int = 1000) -> tuple[float, float]:
    """The mean cost of the loop's per-step call, `LoopGuards.check` (Guards.observe, the decision
    against 30 checkpoints, the row's entries), over a long run whose history grows with it; and of
    the guards' state a checkpoint saves."""
    from types import SimpleNamespace

    from rltrain.distributed import Dist
    from rltrain.orchestrator.guarding import LoopGuards

    # the random stream fires ~20 warnings: each is logged (records made), but to nowhere
    logger = logging.getLogger("rltrain")
    saved = logger.handlers, logger.propagate
    logger.handlers, logger.propagate = [logging.NullHandler()], False
    rng = random.Random(0)
    recorder: Any = SimpleNamespace(dist=Dist(), run_metrics={})
    loop = LoopGuards([], recorder, ahead=1)
    checkpoints = [f"runs/x/checkpoints/step_{n}" for n in range(10, 310, 10)]
    t = time.perf_counter()
    for step in range(1, steps + 1):
        row = {
            "reward_mean": rng.random(),
            "reward_max": 1.0,
            "env/e/reward_mean": rng.random(),
            "completion_len_mean": 20 + rng.random(),
            "truncated_frac": rng.random() * 0.5,
            "repeat_frac": rng.random() * 0.1,
            "entropy": 1 + rng.random(),
            "training_tokens": 500.0,
            "mismatch_kl": rng.random() * 1e-3,
            "staleness_max": 0.0,
            "flat_group_frac": rng.random() * 0.5,
            "errored_frac": 0.0,
        }
        if step % 10 == 0:
            row["eval/e/avg@4"] = rng.random()
        loop.check(step, row, checkpoints)
    per_step = (time.perf_counter() - t) / steps * 1e3
    logger.handlers, logger.propagate = saved
    t = time.perf_counter()
    for _ in range(20):
        loop.state_dict()
    return per_step, (time.perf_counter() - t) / 20 * 1e3


def demo_step_ms(steps: int) -> float:
    """The median step time of a serial tiny-model digits run (the test suite's run config)."""
    from rltrain.config import parse_config
    from rltrain.record import read_jsonl
    from rltrain.run import train
    from tests.conftest import make_run_config

    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_run_config(Path(tmp), max_steps=steps, batch_size=32, sampling={"max_tokens": 24})
        rec = train(parse_config(cfg))
        rows = read_jsonl(rec.run_dir / "metrics.jsonl")
    return statistics.median(r["step_s"] for r in rows[1:]) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    step = [demo_step_ms(args.steps)]
    small, large = stats_ms(records(32, 24)), stats_ms(records(512, 300))
    per_check, state = check_ms()
    step.append(demo_step_ms(args.steps))
    load = os.getloadavg()[0]
    tiny = statistics.mean(step)
    print(
        f"load average {load:.2f}; tiny-model step (32 x 24 tokens, serial): {step[0]:.1f} / {step[1]:.1f} ms"
    )
    print(f"rollout statistics, 32 completions x 24 words:  {small:.3f} ms")
    print(f"rollout statistics, 512 completions x 300 words: {large:.3f} ms")
    print(f"LoopGuards.check (7 default guards, 1,000 steps): {per_check:.3f} ms per step")
    print(f"the guards' state in a checkpoint (1,000 steps):  {state:.3f} ms per checkpoint")
    print(f"guards on the tiny model's step: {(small + per_check) / tiny:.2%} of {tiny:.1f} ms")


if __name__ == "__main__":
    main()
