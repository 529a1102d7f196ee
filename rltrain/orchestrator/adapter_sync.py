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

from rltrain.adapters import export_adapter, landing_probe
from rltrain.rollout.backend import RolloutBackend
from rltrain.trainer.model import Policy
from rltrain.trainer.step import sequence_logprobs
from rltrain.types import Sample

PROBE_TEXT = "Landed check: the adapter must change these logprobs 0123456789."


class AdapterNotLanded(RuntimeError):
    pass


def probe_sample(policy: Policy) -> Sample:
    """The landed check's probe: a fixed text, its first third the prompt."""
    ids = policy.tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    cut = max(1, len(ids) // 3)
    comp = ids[cut:]
    return Sample(ids[:cut], comp, [0.0] * len(comp), [1] * len(comp), 0.0, 0.0)


def mean_abs(a: list[float], b: list[float]) -> float:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / max(len(a), 1)


def trainer_probe(policy: Policy) -> list[float]:
    """The trainer's logprobs of the landed check's probe, under its current adapter."""
    return sequence_logprobs(policy, [probe_sample(policy)], temperature=1.0)[0]


def base_probe(policy: Policy) -> list[float]:
    """The trainer's logprobs of the probe on the base model (adapter off): they never change."""
    with policy.model.disable_adapter():
        return trainer_probe(policy)


def engine_probe(backend: RolloutBackend, policy: Policy) -> list[float]:
    probe = probe_sample(policy)
    return backend.score_logprobs(probe.prompt_ids, probe.completion_ids)


@dataclass(frozen=True)
class LandedRule:
    """How the landed check decides (docs/vllm.md has the rule and the margins measured for it).

    An engine and the trainer never agree exactly: their kernels differ, by ~1e-6 in fp32 and by a
    model-, size- and device-dependent amount in bf16 (0.026 on the tiny model on CPU). So the check
    measures that noise floor at start, on the same weights (the base model), and then asks two things of
    each adapter. Relative: for each alternative a failed load would leave the engine serving (the base
    model, the adapter of the last check) that the trainer's own logprobs put at least `gate` floors away
    from the current adapter, the engine must be nearer the current adapter than that alternative.
    Absolute: its distance to the trainer stays within `floor_multiple` floors (or `override`).
    """

    override: float | None = None  # rollout.landed_check_tolerance: a fixed bound on the distance instead
    floor_multiple: float = 4.0
    gate: float = 2.0
    min_floor: float = 2.5e-4  # fp32 engines agree to ~1e-6: below this the floor is rounding luck

    def bound(self, floor: float) -> float:
        return self.override if self.override is not None else self.floor_multiple * floor


class LandedCheck:
    """The check's state: the noise floor measured at start, and the trainer's probe logprobs on the base
    model and at the last check (what an ignored or a stale adapter would leave the engine serving)."""

    def __init__(self, rule: LandedRule, backend_name: str) -> None:
        self.rule, self.backend_name = rule, backend_name
        self.floor = rule.min_floor
        self.base: list[float] | None = None
        self.last: list[float] | None = None

    def calibrate(self, engine: list[float], trainer_base: list[float]) -> dict[str, float]:
        """The engine and the trainer on the same weights (the base model): the floor."""
        self.base = trainer_base
        self.floor = max(mean_abs(engine, trainer_base), self.rule.min_floor)
        return {"landed_floor": self.floor}

    def judge(self, engine: list[float], trainer: list[float], calibrating: bool = False) -> dict[str, float]:
        """Metrics of one check; raises when the adapter did not land. `calibrating`: the first sync's
        loud probe adapter, which must be told apart from the base model, and is decided by that alone."""
        diff, bound = mean_abs(engine, trainer), self.rule.bound(self.floor)
        ratios: dict[str, float] = {}  # d(engine, current) / d(engine, alternative): < 1 nearer current
        for name, alt in (("base model", self.base), ("previous adapter", self.last)):
            if alt is not None and mean_abs(trainer, alt) >= self.rule.gate * self.floor:
                ratios[name] = diff / max(mean_abs(engine, alt), 1e-12)
        worst = max(ratios, key=ratios.__getitem__, default=None)
        if calibrating:
            failed = worst is None or ratios[worst] >= 1.0
        else:
            failed = diff > bound or (worst is not None and ratios[worst] >= 1.0)
        if failed:
            raise AdapterNotLanded(self._message(diff, bound, worst, ratios))
        if not calibrating:
            self.last = trainer
        out = {"landed_diff": diff}
        return out | ({"landed_ratio": ratios[worst]} if worst is not None else {})

    def _message(self, diff: float, bound: float, worst: str | None, ratios: dict[str, float]) -> str:
        why = f"differ from the trainer's by {diff:.4g} (noise floor {self.floor:.3g}, bound {bound:.3g})"
        if worst is not None and ratios[worst] >= 1.0:
            hint = "the adapter was ignored" if worst == "base model" else "the engine kept serving it"
            why += f", and by only {diff / ratios[worst]:.4g} from the {worst}'s: {hint}"
        elif worst is None and diff <= bound:
            why += ", and the probe adapter is within noise of the base model: nothing to tell apart"
        return f"landed check failed: {self.backend_name} logprobs {why}; refusing to train off-policy"


@dataclass(frozen=True)
class SyncSettings:
    live_dir: Path  # where adapter versions are written for the engine (one subdir per rank)
    model_type: str | None  # the checkpoint's model_type: the layout the engine applies
    rule: LandedRule  # how the landed check decides
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
        self.landed = LandedCheck(settings.rule, backend.name)

    def push_first(self, step: int) -> dict[str, float]:
        """The starting adapter (version `step`) reaches the engine, after the landed check's calibration:
        the noise floor on the base model (the engine starts there), then a loud probe adapter that must
        land, since a fresh one (B = 0) equals the base model whether it landed or not."""
        backend, policy, s = self.backend, self.policy, self.settings
        if backend.reads_live_weights:  # it samples the trainer's own model: nothing to hand over
            backend.load_adapter(None, step)
            return {}
        t0 = time.perf_counter()
        backend.load_adapter(None, step)
        out = self.landed.calibrate(engine_probe(backend, policy), base_probe(policy))
        with landing_probe(policy.model):
            probe = export_adapter(policy.model, s.live_dir / "probe", s.model_type, policy.adapter_state())
            backend.load_adapter(probe, step)
            loud = self.landed.judge(engine_probe(backend, policy), trainer_probe(policy), calibrating=True)
        shutil.rmtree(s.live_dir / "probe", ignore_errors=True)
        out |= {f"landed_probe_{k.removeprefix('landed_')}": v for k, v in loud.items()}
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
        """On the engine's side: sample with `adapter` from now on; timings, and the landed check when it
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
            out |= self.landed.judge(engine_probe(self.backend, self.policy), adapter.probe)
        return out

    def check(self) -> dict[str, float]:
        """The landed check with the trainer as it is now (it holds the version the engine has)."""
        return self.landed.judge(engine_probe(self.backend, self.policy), trainer_probe(self.policy))
