"""Hand the trainer's adapter to the rollout engine every step, and prove that it landed.

The bridge between the two sides: it reads the trainer's weights and logprobs and talks to the
backend only through the `RolloutBackend` protocol, so neither side imports the other. The trainer
`export`s each version as an `Adapter`; the rollout source `land`s it on the engine (serial: at once;
sampling ahead: on the producer's thread, when the bound allows).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
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


@dataclass(frozen=True)
class Adapter:
    """A published adapter version, as the trainer hands it to a rollout source."""

    version: int  # optimizer steps applied
    path: Path | None = None  # its files for the engine (None: the backend reads the trainer's live weights)
    probe: list[float] | None = None  # the trainer's probe logprobs at this version, when a check is due
    export_s: float = 0.0  # writing it, on the trainer's side


class AdapterSync:
    """Export the adapter as a new version each step, load it into the backend, check it landed."""

    def __init__(self, backend: RolloutBackend, policy: Policy, settings: SyncSettings) -> None:
        self.backend, self.policy, self.settings = backend, policy, settings

    def push_first(self, step: int) -> dict[str, float]:
        """The starting adapter (version `step`) reaches the engine, proven with a loud probe: a fresh
        adapter (B = 0) equals the base model."""
        backend, policy, s = self.backend, self.policy, self.settings
        if backend.reads_live_weights:  # it samples the trainer's own model: nothing to hand over
            backend.load_adapter(None, step)
            return {}
        t0 = time.perf_counter()
        with landing_probe(policy.model):
            probe = export_adapter(policy.model, s.live_dir / "probe", s.model_type, policy.adapter_state())
            backend.load_adapter(probe, step)
            out = {"landed_diff": landed_check(backend, policy, s.tolerance)}
        shutil.rmtree(s.live_dir / "probe", ignore_errors=True)
        adapter = self.export(step)
        return out | self.land(replace(adapter, export_s=time.perf_counter() - t0))

    def check_due(self, step: int) -> bool:
        return bool(self.settings.interval) and step % self.settings.interval == 0

    def export(self, step: int) -> Adapter:
        """On the trainer's side: the adapter after `step` (version `step`; its directory is v{step + 1},
        the adapter the next step samples) written for the engine."""
        if self.backend.reads_live_weights:
            return Adapter(step)
        t0 = time.perf_counter()
        s, policy = self.settings, self.policy
        path = export_adapter(policy.model, s.live_dir / f"v{step + 1}", s.model_type, policy.adapter_state())
        return Adapter(step, path, export_s=time.perf_counter() - t0)

    def probed(self, adapter: Adapter) -> Adapter:
        """`adapter` with the trainer's probe logprobs, taken now (the trainer holds that version), for
        an engine that lands it later: the landed check then compares with these."""
        return replace(adapter, probe=trainer_probe(self.policy))

    def land(self, adapter: Adapter) -> dict[str, float]:
        """On the engine's side: sample with `adapter` from now on; timings, and landed_diff when it
        carries the trainer's probe."""
        t0 = time.perf_counter()
        self.backend.load_adapter(adapter.path, adapter.version)
        out: dict[str, float] = {}
        if adapter.path is not None:
            for old in self.settings.live_dir.glob("v*"):
                if old != adapter.path:
                    shutil.rmtree(old, ignore_errors=True)
            out["adapter_sync_s"] = time.perf_counter() - t0 + adapter.export_s
            out |= {f"{self.backend.name}/{k}": v for k, v in self.backend.timings.items()}
        if adapter.probe is not None:
            out["landed_diff"] = landed_check(
                self.backend, self.policy, self.settings.tolerance, adapter.probe
            )
        return out

    def check(self) -> dict[str, float]:
        """The landed check with the trainer as it is now (it holds the version the engine has)."""
        return {"landed_diff": landed_check(self.backend, self.policy, self.settings.tolerance)}
