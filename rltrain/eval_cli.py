"""`python -m rltrain eval --config X.toml [--adapter CHECKPOINT]`: score the base model or an adapter,
with the training loop's own setup (orchestrator/spec.py, orchestrator/setup.py) and evaluation."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rltrain.config import ConfigError, load_config
from rltrain.distributed import Dist
from rltrain.orchestrator.evals import EvalPlan, EvalTarget, eval_rows, evaluate, metric
from rltrain.orchestrator.setup import build_engine
from rltrain.orchestrator.spec import resolve
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
    spec = resolve(cfg, eval_only=True)  # [[eval.env]] when the config has them, else the training envs
    policy = load_policy(cfg, spec.model_path, adapter, tokenizer=spec.tokenizer)
    with tempfile.TemporaryDirectory(prefix="rltrain-eval-") as tmp:
        engine = build_engine(spec, policy, live_dir=Path(tmp), dist=Dist())
        if adapter is not None:
            engine.sync.push_first(0)
        plan = EvalPlan("eval", tuple(EvalTarget(i, num, k) for i in range(len(spec.slots))))
        scores = evaluate(engine.collector, plan, engine.prompting.sampling(0))
        engine.close()
    print(f"model: {cfg.model}   adapter: {adapter or '(none: base model)'}")
    print(f"{'environment':32} {'examples':>8} {'k':>3} {f'avg@{k}':>8} {f'pass@{k}':>8}")
    for slot in spec.slots:
        avg, pas = (scores[metric("eval", slot.name, stat, k)] for stat in ("avg", "pass"))
        print(f"{slot.name:32} {len(eval_rows(slot, num)):8d} {k:3d} {avg:8.3f} {pas:8.3f}")
    return 0
