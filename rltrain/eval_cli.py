"""`python -m rltrain eval --config X.toml [--adapter CHECKPOINT]`: score the base model or an adapter."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rltrain.config import ConfigError, load_config
from rltrain.distributed import Dist
from rltrain.engine import build_engine, size_run
from rltrain.evaluate import EvalPlan, EvalTarget, evaluate
from rltrain.models import resolve_model_path
from rltrain.rundir import build_slots, eval_entries
from rltrain.trainer.model import load_policy


def run_eval(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m rltrain eval", description="Evaluate on held-out rows.")
    parser.add_argument("--config", required=True)
    parser.add_argument("--adapter", help="a checkpoint or adapter dir (default: the base model)")
    parser.add_argument("--num-examples", type=int, help="rows per environment (default: [eval] or 32)")
    parser.add_argument(
        "-k", "--rollouts-per-example", type=int, help="completions per row (default: [eval] or 1)"
    )
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as err:
        print(f"rltrain: {err}", file=sys.stderr)
        return 2
    adapter = Path(args.adapter) if args.adapter else None
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        print(f"rltrain: eval: --adapter {adapter}: no adapter_config.json there", file=sys.stderr)
        return 2
    num = args.num_examples or (cfg.eval.num_examples if cfg.eval else 32)
    k = args.rollouts_per_example or (cfg.eval.rollouts_per_example if cfg.eval else 1)
    entries = eval_entries(cfg) or cfg.env
    slots = build_slots(cfg, entries)  # [[eval.env]] when the config has them, else the training envs
    policy = load_policy(cfg, resolve_model_path(cfg.model), adapter)
    with tempfile.TemporaryDirectory(prefix="rltrain-eval-") as tmp:
        sizing = size_run(cfg, slots)
        engine = build_engine(cfg, policy, slots, live_dir=Path(tmp), dist=Dist(), sizing=sizing)
        if adapter is not None:
            engine.sync.push(0, first=True)
        plan = EvalPlan("eval", tuple(EvalTarget(i, num, k) for i in range(len(slots))))
        scores = evaluate(engine.collector, plan, engine.prompting.sampling(0))
        engine.close()
    print(f"model: {cfg.model}   adapter: {adapter or '(none: base model)'}")
    print(f"{'environment':32} {'examples':>8} {'k':>3} {f'avg@{k}':>8} {f'pass@{k}':>8}")
    for slot in slots:
        rows = len((slot.env.eval_rows or slot.env.rows)[:num])
        avg, pas = scores[f"eval/{slot.name}/avg@{k}"], scores[f"eval/{slot.name}/pass@{k}"]
        print(f"{slot.name:32} {rows:8d} {k:3d} {avg:8.3f} {pas:8.3f}")
    return 0
