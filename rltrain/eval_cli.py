"""`python -m rltrain eval --config X.toml [--adapter CHECKPOINT]`: score the base model or an adapter,
with 95% intervals; `--compare A B`: two adapters (or `base`) on the same rows and sampling seeds."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rltrain.config import ConfigError, load_config
from rltrain.distributed import Dist
from rltrain.evalstats import compare, comparison_json, comparison_table, eval_table
from rltrain.orchestrator.evals import EvalTarget, target_rewards
from rltrain.orchestrator.setup import build_engine
from rltrain.orchestrator.spec import RunSpec, resolve
from rltrain.trainer.model import load_policy

Scores = dict[str, list[list[float]]]  # environment -> each row's k rewards


def _adapter(arg: str | None) -> Path | None:
    """An --adapter / --compare argument: a dir holding adapter_config.json, or `base` (none)."""
    if arg is None or arg == "base":
        return None
    if not (Path(arg) / "adapter_config.json").is_file():
        raise ValueError(f"{arg}: no adapter_config.json there")
    return Path(arg)


def _score(spec: RunSpec, adapter: Path | None, rows: tuple[int, int]) -> Scores:
    """Each environment's rewards for the base model or `adapter` (rows: examples per env, k), with the
    training loop's own setup (orchestrator/spec.py, orchestrator/setup.py)."""
    policy = load_policy(spec.cfg, spec.model_path, adapter, tokenizer=spec.tokenizer)
    with tempfile.TemporaryDirectory(prefix="rltrain-eval-") as tmp:
        engine = build_engine(spec, policy, live_dir=Path(tmp), dist=Dist())
        if adapter is not None:
            engine.sync.push_first(0)
        sampling = engine.prompting.sampling(0)  # the same seeds for every policy scored
        out = {
            s.name: target_rewards(engine.collector, EvalTarget(i, *rows), sampling)
            for i, s in enumerate(spec.slots)
        }
        engine.close()
    return out


def run_eval(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m rltrain eval", description="Evaluate on held-out rows.")
    parser.add_argument("--config", required=True)
    parser.add_argument("--adapter", help="a checkpoint or adapter dir (default: the base model)")
    parser.add_argument(
        "--compare", nargs=2, metavar=("A", "B"), help="two adapters (or `base`): A - B, paired"
    )
    parser.add_argument("--json", help="--compare: also write the comparison to this JSON file")
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
    try:
        policies = [_adapter(a) for a in (args.compare or [args.adapter])]
    except ValueError as err:
        print(f"rltrain: eval: {'--compare' if args.compare else '--adapter'} {err}", file=sys.stderr)
        return 2
    num = args.num_examples or (cfg.eval.num_examples if cfg.eval else 32)
    k = args.rollouts_per_example or (cfg.eval.rollouts_per_example if cfg.eval else 1)
    spec = resolve(cfg, eval_only=True)  # [[eval.env]] when the config has them, else the training envs
    scores = [_score(spec, p, (num, k)) for p in policies]
    if not args.compare:
        print(f"model: {cfg.model}   adapter: {policies[0] or '(none: base model)'}")
        print(eval_table(scores[0], k))
        return 0
    names = (args.compare[0], args.compare[1])
    results = {env: compare(scores[0][env], scores[1][env]) for env in scores[0]}
    print(f"model: {cfg.model}   a: {names[0]}   b: {names[1]}   (avg@{k}, 95% intervals, paired over rows)")
    print(comparison_table(results, names))
    if args.json:
        Path(args.json).write_text(comparison_json(results, names) + "\n")
    return 0
