"""The checks of scripts/fault_injection.py: what a kill may never break, and what a finished run
must equal. A resumed run is the uninterrupted one, serial or sampling ahead (a checkpoint keeps the
batches sampled ahead: docs/reliability.md), so runs are compared with the reference value for value:
the same prompts in the same order, every step once, usage that is the sum of the logged steps (nothing
counted twice), the same metrics and the same final adapter."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

# Metrics that must not change when a run is killed and resumed (timings and throughput may).
EXACT = ("reward_mean", "loss", "grad_norm", "input_tokens", "output_tokens", "training_tokens")
USAGE = ("input_tokens", "output_tokens", "training_tokens")


def read_rows(path: Path) -> list[dict[str, Any]]:
    from rltrain.record import read_jsonl

    return read_jsonl(path)


def phase(run_dir: Path, max_steps: int) -> str:
    """Where the kill landed, from what it left on disk."""
    from rltrain.checkpoint import complete_checkpoints

    if not (run_dir / "run.json").exists():
        return "before the record existed"
    status = json.loads((run_dir / "run.json").read_text())["status"]
    if status in ("succeeded", "failed", "cancelled"):
        return f"after the run ended ({status})"
    if list((run_dir / "checkpoints").glob(".step_*")):
        return "during a checkpoint write"
    done = complete_checkpoints(run_dir)
    if not read_rows(run_dir / "metrics.jsonl") and not done:
        return "before the first step"
    if not done:
        return "before the first checkpoint"
    return "after the final checkpoint" if done[-1].name == f"step_{max_steps}" else "between checkpoints"


def kill_problems(run_dir: Path) -> list[str]:
    """What a kill may never break: a parseable, valid record and loadable complete checkpoints."""
    import jsonschema
    from safetensors.torch import load_file

    from rltrain.checkpoint import complete_checkpoints, load_trainer_state
    from rltrain.record import load_schema

    problems = []
    if (run_dir / "run.json").exists():
        try:
            jsonschema.validate(json.loads((run_dir / "run.json").read_text()), load_schema())
            json.loads((run_dir / "config.json").read_text())
        except (ValueError, OSError, jsonschema.ValidationError) as err:
            problems.append(f"record/config after kill: {type(err).__name__}: {err}")
    for ckpt in complete_checkpoints(run_dir):
        try:
            load_file(str(ckpt / "adapter_model.safetensors"))
            assert int(load_trainer_state(ckpt)["step"]) == int(ckpt.name[5:])
        except Exception as err:  # any failure to load is the finding
            problems.append(f"{ckpt.name} after kill: {type(err).__name__}: {err}")
    return problems


def prompt_order(run_dir: Path, max_steps: int) -> list[list[str]]:
    """Each step's prompts (row keys), in the order they were sampled."""
    return [
        [r["row"] for r in read_rows(run_dir / "rollouts" / f"step_{s}.jsonl")]
        for s in range(1, max_steps + 1)
    ]


def final_problems(run_dir: Path, max_steps: int, ref: Path | None, exact: bool = True) -> list[str]:
    """What a finished run must satisfy; `ref`: the reference run to compare with (exact: value for
    value, else its prompts and their order only)."""
    import jsonschema
    from safetensors.torch import load_file

    from rltrain.record import load_schema

    rec = json.loads((run_dir / "run.json").read_text())
    jsonschema.validate(rec, load_schema())
    rows = read_rows(run_dir / "metrics.jsonl")
    problems = [] if rec["status"] == "succeeded" else [f"status {rec['status']}: {rec.get('error')}"]
    if [r["step"] for r in rows] != list(range(1, max_steps + 1)):
        problems.append(f"steps logged: {[r['step'] for r in rows]}")
    problems += [
        f"incomplete checkpoint {c}" for c in rec["checkpoints"] if not (Path(c) / "COMPLETE").is_file()
    ]
    if problems:
        return problems
    logged = {k: sum(int(r[k]) for r in rows) for k in USAGE}
    if any(rec["usage"][k] != logged[k] for k in USAGE):
        problems.append(f"usage {rec['usage']} is not the sum of the logged steps {logged}")
    if ref is None:
        return problems
    if prompt_order(run_dir, max_steps) != prompt_order(ref, max_steps):
        problems.append("prompts or their order differ from the reference run")
    if not exact:
        return problems
    ref_rows = read_rows(ref / "metrics.jsonl")
    if [[r.get(k) for k in EXACT] for r in rows] != [[r.get(k) for k in EXACT] for r in ref_rows]:
        problems.append("metrics differ from the reference run")
    ref_usage = json.loads((ref / "run.json").read_text())["usage"]
    if any(rec["usage"][k] != ref_usage[k] for k in ("input_tokens", "output_tokens", "training_tokens")):
        problems.append(f"usage {rec['usage']} != reference {ref_usage}")
    name = f"checkpoints/step_{max_steps}/adapter_model.safetensors"
    a, b = load_file(str(run_dir / name)), load_file(str(ref / name))
    if a.keys() != b.keys() or max(float((a[k] - b[k]).abs().max()) for k in a) > 1e-5:
        problems.append("final adapter differs from the reference run")
    return problems


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, waiting to be reaped
    except (FileNotFoundError, ProcessLookupError):
        return False


def survivors(pid_dir: Path, within: float = 10.0) -> list[str]:
    """Each process an environment ran (`<kind>-<pid>` files in `pid_dir`) still alive `within` seconds
    after its run ended or was killed: none may be."""
    pids = {int(p.name.rsplit("-", 1)[1]): p.name for p in pid_dir.glob("*-*")} if pid_dir.is_dir() else {}
    deadline = time.monotonic() + within
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [f"{pids[p]} still alive {within:.0f} s after its run ended" for p in alive]
