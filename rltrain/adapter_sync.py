"""Hand the trainer's adapter to the rollout engine every step, and prove that it landed.

The bridge between the two sides: it reads the trainer's weights and logprobs and talks to the
backend only through the `RolloutBackend` protocol, so neither side imports the other.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rltrain.adapters import export_adapter, landing_probe
from rltrain.rollout.backend import RolloutBackend
from rltrain.trainer.model import Policy
from rltrain.trainer.step import sequence_logprobs
from rltrain.types import Sample

PROBE_TEXT = "Landed check: the adapter must change these logprobs 0123456789."


class AdapterNotLanded(RuntimeError):
    pass


def landed_tolerance(configured: float | None, dtype: torch.dtype) -> float:
    """`rollout.landed_check_tolerance`, else by dtype: bf16 engines differ from the trainer by more."""
    if configured is not None:
        return configured
    return 1e-3 if dtype == torch.float32 else 0.05


def _probe(policy: Policy) -> Sample:
    ids = policy.tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    cut = max(1, len(ids) // 3)
    comp = ids[cut:]
    return Sample(ids[:cut], comp, [0.0] * len(comp), [1] * len(comp), 0.0, 0.0)


def _mean_abs(a: list[float], b: list[float]) -> float:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / max(len(a), 1)


def landed_check(backend: RolloutBackend, policy: Policy, tol: float) -> float:
    """Mean |backend - trainer| logprob on a fixed probe; raises when the adapter did not land."""
    probe = _probe(policy)
    mine = sequence_logprobs(policy, [probe], temperature=1.0)[0]
    theirs = backend.score_logprobs(probe.prompt_ids, probe.completion_ids)
    diff = _mean_abs(mine, theirs)
    if diff > tol and not policy.sharded:  # sharded: every rank would have to run this forward too
        with policy.model.disable_adapter():
            base = sequence_logprobs(policy, [probe], temperature=1.0)[0]
        hint = (
            " — it matches the base model: the adapter was ignored" if _mean_abs(base, theirs) < diff else ""
        )
        raise AdapterNotLanded(
            f"landed check failed: {backend.name} logprobs differ from the trainer's by {diff:.4g} "
            f"(tolerance {tol:g}){hint}; refusing to train off-policy"
        )
    return diff


@dataclass(frozen=True)
class SyncSettings:
    live_dir: Path  # where adapter versions are written for the engine (one subdir per rank)
    model_type: str | None  # the checkpoint's model_type: the layout the engine applies
    tolerance: float  # the landed check's bound on the mean |logprob| difference
    interval: int  # steps between landed checks after the first sync (0 = first sync only)


class AdapterSync:
    """Export the adapter as a new version each step, load it into the backend, check it landed."""

    def __init__(self, backend: RolloutBackend, policy: Policy, settings: SyncSettings) -> None:
        self.backend, self.policy, self.settings = backend, policy, settings

    def push(self, step: int, first: bool = False) -> dict[str, float]:
        """The adapter after `step` becomes version step + 1; returns sync timings and landed_diff."""
        backend, policy, s = self.backend, self.policy, self.settings
        if backend.reads_live_weights:  # it samples the trainer's own model: nothing to hand over
            backend.load_adapter(None, step + 1)
            return {}
        t0 = time.perf_counter()
        out: dict[str, float] = {}
        if first:  # a fresh adapter (B = 0) equals the base model: prove landing with a loud one
            with landing_probe(policy.model):
                probe = export_adapter(
                    policy.model, s.live_dir / "probe", s.model_type, policy.adapter_state()
                )
                backend.load_adapter(probe, step + 1)
                out["landed_diff"] = landed_check(backend, policy, s.tolerance)
            shutil.rmtree(s.live_dir / "probe", ignore_errors=True)
        path = export_adapter(policy.model, s.live_dir / f"v{step + 1}", s.model_type, policy.adapter_state())
        backend.load_adapter(path, step + 1)
        for old in s.live_dir.glob("v*"):
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
        out["adapter_sync_s"] = time.perf_counter() - t0
        out.update({f"{backend.name}/{k}": v for k, v in backend.timings.items()})
        if not first and s.interval and step % s.interval == 0:
            out["landed_diff"] = landed_check(backend, policy, s.tolerance)
        return out
