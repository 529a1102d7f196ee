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


def trainer_probe(policy: Policy) -> list[float]:
    """The trainer's logprobs of the landed check's probe, under its current adapter."""
    return sequence_logprobs(policy, [_probe(policy)], temperature=1.0)[0]


def landed_check(
    backend: RolloutBackend, policy: Policy, tol: float, mine: list[float] | None = None
) -> float:
    """Mean |backend - trainer| logprob on a fixed probe; raises when the adapter did not land.
    `mine`: the trainer's probe logprobs when taken earlier (at the version the backend now holds)."""
    probe = _probe(policy)
    given = mine is not None
    mine = mine if mine is not None else sequence_logprobs(policy, [probe], temperature=1.0)[0]
    theirs = backend.score_logprobs(probe.prompt_ids, probe.completion_ids)
    diff = _mean_abs(mine, theirs)
    if diff > tol and not policy.sharded:  # sharded: every rank would have to run the hint's forward
        hint = ""
        if not given:  # the trainer holds the version the engine was given: compare with the base model
            with policy.model.disable_adapter():
                base = sequence_logprobs(policy, [probe], temperature=1.0)[0]
            if _mean_abs(base, theirs) < diff:
                hint = " — it matches the base model: the adapter was ignored"
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
        """The adapter after `step` (version `step`: updates applied) reaches the engine; returns sync
        timings and landed_diff. (Its directory is v{step + 1}: the adapter the next step samples.)"""
        backend, policy, s = self.backend, self.policy, self.settings
        if backend.reads_live_weights:  # it samples the trainer's own model: nothing to hand over
            backend.load_adapter(None, step)
            return {}
        t0 = time.perf_counter()
        out: dict[str, float] = {}
        if first:  # a fresh adapter (B = 0) equals the base model: prove landing with a loud one
            with landing_probe(policy.model):
                probe = export_adapter(
                    policy.model, s.live_dir / "probe", s.model_type, policy.adapter_state()
                )
                backend.load_adapter(probe, step)
                out["landed_diff"] = landed_check(backend, policy, s.tolerance)
            shutil.rmtree(s.live_dir / "probe", ignore_errors=True)
        out.update(self.load(self.export(step), step, t0))
        if not first and self.check_due(step):
            out["landed_diff"] = landed_check(backend, policy, s.tolerance)
        return out

    def check_due(self, step: int) -> bool:
        return bool(self.settings.interval) and step % self.settings.interval == 0

    def export(self, step: int) -> Path | None:
        """On the trainer's side: the adapter after `step` written for the engine (None: the backend
        reads the trainer's live weights)."""
        if self.backend.reads_live_weights:
            return None
        s, policy = self.settings, self.policy
        return export_adapter(policy.model, s.live_dir / f"v{step + 1}", s.model_type, policy.adapter_state())

    def load(self, path: Path | None, step: int, since: float | None = None) -> dict[str, float]:
        """On the engine's side: sample with the adapter at `path` (version `step`) from now on."""
        t0 = since if since is not None else time.perf_counter()
        self.backend.load_adapter(path, step)
        if path is None:
            return {}
        for old in self.settings.live_dir.glob("v*"):
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
        out = {"adapter_sync_s": time.perf_counter() - t0}
        return out | {f"{self.backend.name}/{k}": v for k, v in self.backend.timings.items()}
