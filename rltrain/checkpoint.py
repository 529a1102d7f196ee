"""Checkpoints: `checkpoints/step_N/` with the peft adapter, trainer state and a marker written last;
and the standalone adapter copies of `[adapters]` (`adapters/step_N/`).

A checkpoint is built in a hidden temp dir and renamed into place, and only a dir holding the
`COMPLETE` marker is ever trusted, so a kill at any instant leaves the previous one intact.
"""

from __future__ import annotations

import math
import random
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rltrain.adapters import export_adapter
from rltrain.config import AdapterConfig
from rltrain.distributed import Dist
from rltrain.fsutil import atomic_path
from rltrain.record import read_jsonl
from rltrain.trainer.model import Policy

MARKER = "COMPLETE"
STATE_FILE = "trainer_state.pt"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Snapshot:
    """The policy's saveable state; taking it is a collective when the model is sharded."""

    adapter: dict[str, torch.Tensor] | None  # None: peft reads the (unsharded) model itself
    optimizer: dict[str, Any]


def snapshot(policy: Policy) -> Snapshot:
    return Snapshot(policy.adapter_state(), policy.optimizer_state())


def save_checkpoint(
    run_dir: Path, step: int, policy: Policy, extra: dict[str, Any], snap: Snapshot | None = None
) -> Path:
    """Write `checkpoints/step_{step}`; `extra` holds loop state (data position, usage, metrics)."""
    snap = snap or snapshot(policy)
    final = run_dir / "checkpoints" / f"step_{step}"
    with atomic_path(final, directory=True) as tmp:  # `.step_N.*` until complete: prune drops leftovers
        policy.save_adapter(tmp, snap.adapter)
        state = {
            "step": step,
            "optimizer": snap.optimizer,
            "scheduler": policy.scheduler.state_dict(),
            "rng": rng_state(),
            **extra,
        }
        torch.save(state, tmp / STATE_FILE)
        (tmp / MARKER).write_text(f"{step}\n")
    return final


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if (p / MARKER).is_file() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    # weights_only=False: the state holds RNG tuples and numpy arrays, and it is our own file
    return torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)  # type: ignore[no-any-return]


def restore(policy: Policy, state: dict[str, Any]) -> None:
    policy.load_optimizer_state(state["optimizer"])
    policy.scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])


def roll_back(policy: Policy, ckpt: Path, lr_factor: float) -> float:
    """A guard's rollback: the adapter and optimizer moments of `ckpt` into the live policy, and the
    learning rate scaled by `lr_factor` (relative to the live one, so rollbacks compound). The schedule,
    the RNG and the data position go on where the run is: its steps keep counting. Returns the new lr."""
    state = load_trainer_state(ckpt)
    lrs = [group["lr"] for group in policy.optimizer.param_groups]
    initial = [group.get("initial_lr") for group in policy.optimizer.param_groups]
    policy.load_adapter_weights(ckpt)
    policy.load_optimizer_state(state["optimizer"])  # its moments, and its learning rates: undone next
    for group, lr, first in zip(policy.optimizer.param_groups, lrs, initial, strict=True):
        group["lr"] = lr
        if first is not None:
            group["initial_lr"] = first
    return policy.scale_lr(lr_factor)


def best_checkpoint(checkpoints: Sequence[Path], rows: Sequence[dict[str, Any]], key: str) -> Path | None:
    """`[checkpoints] keep_best`: the checkpoint whose eval at its own step (same weights) has the highest
    lower bound of `key`'s interval (`<key>/lo`; the value where no interval was logged), the later one
    on a tie. None: no checkpoint has that eval."""
    scores = {}
    for row in rows:
        score = row.get(f"{key}/lo", row.get(key))
        if isinstance(score, (int, float)) and math.isfinite(score):
            scores[int(row["step"])] = float(score)
    ranked = [(scores[int(c.name[5:])], int(c.name[5:]), c) for c in checkpoints if int(c.name[5:]) in scores]
    return max(ranked)[2] if ranked else None


def prune(
    run_dir: Path, keep_last: int | None, keep_best: str | None = None, protect: Collection[Path] = ()
) -> None:
    """Delete all but the newest `keep_last` complete checkpoints, and any incomplete leftovers. Also kept:
    the best by `keep_best` (a metric of metrics.jsonl) and those in `protect` (the guards' last good)."""
    root = run_dir / "checkpoints"
    for leftover in root.glob(".step_*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if keep_last is None:
        return
    found = complete_checkpoints(run_dir)
    kept = {p.name for p in protect}
    if keep_best is not None and (
        best := best_checkpoint(found, read_jsonl(run_dir / "metrics.jsonl"), keep_best)
    ):
        kept.add(best.name)
    for old in found[:-keep_last]:
        if old.name in kept:
            continue
        (old / MARKER).unlink()  # first: a kill mid-delete must not leave a "complete" remnant
        shutil.rmtree(old, ignore_errors=True)


def save(
    run_dir: Path,
    step: int,
    policy: Policy,
    extra: dict[str, Any],
    *,
    dist: Dist,
    keep_last: int | None,
    keep_best: str | None = None,
    protect: Collection[Path] = (),
) -> Path:
    """Every rank calls this (gathering a sharded model is a collective); the main rank writes, then
    prunes to the newest `keep_last` (and the best by `keep_best`, and `protect`). Returns the path."""
    # a sharded model is gathered by every rank; replicated weights are read by the writer alone
    snap = snapshot(policy) if policy.sharded or dist.is_main else None
    path = run_dir / "checkpoints" / f"step_{step}"
    if dist.is_main:  # one copy is the checkpoint
        path = save_checkpoint(run_dir, step, policy, extra, snap)
        prune(run_dir, keep_last, keep_best, protect)
    return path


def export_copy(
    run_dir: Path, step: int, policy: Policy, *, settings: AdapterConfig, model_type: str | None, dist: Dist
) -> None:
    """`[adapters]`: a standalone copy of the adapter every `interval` steps, in the layout the engine
    applies (checkpoints keep peft's own)."""
    if not settings.interval or step % settings.interval:
        return
    state = policy.adapter_state()  # every rank: gathering a sharded adapter is a collective
    if not dist.is_main:
        return
    root = run_dir / "adapters"
    export_adapter(policy.model, root / f"step_{step}", model_type, state)
    if settings.keep_last:
        found = sorted(root.glob("step_*"), key=lambda p: int(p.name[5:]))
        for old in found[: -settings.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
