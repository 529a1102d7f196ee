"""The landed check's margin: how far a landed adapter and one deliberately not loaded are apart (issue 22).

For each seed, the bf16 test's run (tiny model, 3 steps, lr 1e-2, vLLM-CPU engine, a landed check every
step) trains and keeps each step's adapter. Then one engine per backend loads those adapters one by one
and scores the landed check's probe. Per step it records the mean |logprob| distance d(engine, trainer)
with the adapter loaded (landed), with the previous adapter still loaded (stale: the load skipped) and
with the base model (ignored: the adapter never applied), the trainer's own distances to the previous
adapter and to the base (what the check can tell apart), and the check's ratio statistics.

    .venv/bin/python scripts/bench_landed.py [--seeds 20] [--dtype bfloat16] [--out docs/bench_landed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RLTRAIN_CACHE", str(REPO / ".cache"))

STEPS = 3


def _train(seed: int, dtype: str, root: Path) -> tuple[Any, list[Path], list[dict[str, Any]]]:
    from conftest import make_run_config

    from rltrain.config import parse_config
    from rltrain.record import read_jsonl
    from rltrain.run import train

    raw = make_run_config(
        root / f"s{seed}",
        max_steps=STEPS,
        run__dtype=dtype,
        run__seed=seed,
        rollout={"backend": "vllm", "landed_check_interval": 1},
        checkpoints={"interval": 1},
    )
    cfg = parse_config(raw)
    rec = train(cfg)
    rows = read_jsonl(rec.run_dir / "metrics.jsonl")
    return cfg, [rec.run_dir / "checkpoints" / f"step_{s}" for s in range(1, STEPS + 1)], rows


def _engines(cfg: Any) -> dict[str, Any]:
    """One vLLM engine and one hf engine (its own copy of the base model, adapters loaded from files)."""
    from rltrain.distributed import Dist
    from rltrain.orchestrator.backends import TrainerModel, make_backend
    from rltrain.orchestrator.spec import resolve
    from rltrain.rollout.hf_backend import HFBackend
    from rltrain.trainer.model import load_policy

    spec = resolve(cfg)
    path = spec.model_path
    pol = load_policy(cfg, path)
    trainer = TrainerModel(pol.model, pol.tokenizer, pol.device, pol.dtype, False)
    vllm = make_backend(spec, trainer, Dist())
    hf = HFBackend(lambda ids: "", pol.tokenizer.pad_token_id, pol.device, model_path=path, dtype=pol.dtype)
    return {"vllm": vllm, "hf": hf}


def _measure(cfg: Any, ckpts: list[Path], engines: dict[str, Any]) -> dict[str, list[dict[str, float]]]:
    from rltrain.models import resolve_model_path
    from rltrain.orchestrator.adapter_sync import mean_abs, probe_sample, trainer_probe
    from rltrain.trainer.model import load_policy

    path = resolve_model_path(cfg.model)
    base_policy = load_policy(cfg, path)
    probe = probe_sample(base_policy)
    trainers = [trainer_probe(base_policy)] + [
        trainer_probe(load_policy(cfg, path, init_adapter=c)) for c in ckpts
    ]  # [base, step 1, step 2, step 3]
    out: dict[str, list[dict[str, float]]] = {}
    for name, engine in engines.items():
        engine.load_adapter(None, 0)
        seen = [engine.score_logprobs(probe.prompt_ids, probe.completion_ids)]
        for v, c in enumerate(ckpts, start=1):
            engine.load_adapter(c, v)
            seen.append(engine.score_logprobs(probe.prompt_ids, probe.completion_ids))
        rows = []
        for s in range(1, len(ckpts) + 1):
            t, prev, base = trainers[s], trainers[s - 1], trainers[0]
            landed, stale, ignored = seen[s], seen[s - 1], seen[0]
            row = {
                "floor": mean_abs(seen[0], base),  # engine and trainer on the same (base) weights
                "landed": mean_abs(landed, t),
                "stale": mean_abs(stale, t),
                "ignored": mean_abs(ignored, t),
                "moved_prev": mean_abs(prev, t),  # what one update moved the probe, trainer side
                "moved_base": mean_abs(base, t),
                # the check's ratio: d(engine, current) / d(engine, the alternative); < 1: nearer current
                "ratio_landed_prev": mean_abs(landed, t) / max(mean_abs(landed, prev), 1e-12),
                "ratio_stale_prev": mean_abs(stale, t) / max(mean_abs(stale, prev), 1e-12),
                "ratio_landed_base": mean_abs(landed, t) / max(mean_abs(landed, base), 1e-12),
                "ratio_ignored_base": mean_abs(ignored, t) / max(mean_abs(ignored, base), 1e-12),
            }
            rows.append(row)
        out[name] = rows
    return out


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for backend in ("vllm", "hf"):
        for s in range(STEPS):
            rows = [r["distances"][backend][s] for r in results]
            sep_stale = [r["ratio_stale_prev"] / max(r["ratio_landed_prev"], 1e-12) for r in rows]
            sep_ignored = [r["ratio_ignored_base"] / max(r["ratio_landed_base"], 1e-12) for r in rows]
            table[f"{backend}/step_{s + 1}"] = {
                "floor_max": max(r["floor"] for r in rows),
                "landed_max": max(r["landed"] for r in rows),
                "landed_median": statistics.median(r["landed"] for r in rows),
                "stale_min": min(r["stale"] for r in rows),
                "ignored_min": min(r["ignored"] for r in rows),
                "ratio_landed_max": max(max(r["ratio_landed_prev"], r["ratio_landed_base"]) for r in rows),
                "ratio_stale_min": min(r["ratio_stale_prev"] for r in rows),
                "ratio_ignored_min": min(r["ratio_ignored_base"] for r in rows),
                "separation_stale_min": min(sep_stale),
                "separation_ignored_min": min(sep_ignored),
            }
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench_landed.json")
    args = ap.parse_args()
    results = []
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            cfg, ckpts, rows = _train(seed, args.dtype, Path(tmp))
            engines = _engines(cfg)  # one vLLM engine at a time in a process: each run closes its own
            results.append(
                {
                    "seed": seed,
                    "run_landed_diff": [r.get("landed_diff") for r in rows],
                    "run_landed_ratio": [r.get("landed_ratio") for r in rows],
                    "run_floor": rows[0].get("landed_floor"),
                    "run_probe": [rows[0].get("landed_probe_diff"), rows[0].get("landed_probe_ratio")],
                    "distances": _measure(cfg, ckpts, engines),
                }
            )
            engines["vllm"].close()
            print(f"seed {seed}: {json.dumps(_summary(results[-1:])['vllm/step_3'])}", flush=True)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "dtype": args.dtype,
        "seeds": args.seeds,
        "load": os.getloadavg(),
        "seconds": round(time.time() - started, 1),
        "summary": _summary(results),
        "runs": results,
    }
    args.out.write_text(json.dumps(report, indent=1))
    for key, row in report["summary"].items():
        print(key, {k: round(v, 4) for k, v in row.items()})


if __name__ == "__main__":
    main()
