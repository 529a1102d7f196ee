"""The training loop, top to bottom: sample -> score -> train -> sync adapter -> record."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rltrain import checkpoint as ckpt
from rltrain.config import Config, settle_auto
from rltrain.distributed import Dist, RankAborted
from rltrain.orchestrator import inflight
from rltrain.orchestrator.evals import due
from rltrain.orchestrator.guarding import LoopGuards
from rltrain.orchestrator.prompts import PromptSampler
from rltrain.orchestrator.setup import (
    Engine,
    Resumed,
    build_engine,
    latest_for_resume,
    make_source,
    start_policy,
)
from rltrain.orchestrator.shares import StepRollouts
from rltrain.orchestrator.sources import Batch, RolloutSource
from rltrain.orchestrator.spec import RunSpec, resolve
from rltrain.progress import Progress
from rltrain.recorder import Recorder
from rltrain.rundir import load_env_files, open_run_dir
from rltrain.signals import StopFlag
from rltrain.trainer.step import NonFiniteUpdates, train_step
from rltrain.types import SamplingParams
from rltrain.wandb_log import open_loggers

log = logging.getLogger("rltrain")
StepCallback = Callable[[int, dict[str, Any]], None]  # (step, metrics) after each step is recorded


@dataclass
class RunContext:
    cfg: Config
    recorder: Recorder
    stop: StopFlag
    resume_from: Path | None  # the checkpoint to continue from
    on_step: StepCallback | None = None
    engine: Engine | None = None  # once built: closed on every exit path
    guards: LoopGuards = field(init=False)  # they watch each step: warn, stop, or roll back

    def __post_init__(self) -> None:
        self.guards = LoopGuards(self.cfg.guards, self.recorder, self.cfg.async_level)


def train(
    cfg: Config, resume: Path | None = None, config_dir: Path = Path("."), on_step: StepCallback | None = None
) -> Recorder:
    """Run (or resume) a training run; returns its recorder (run dir, final record)."""
    dist = Dist()
    device = dist.init(cfg.run.device)
    cfg = settle_auto(cfg, device.type, announce=dist.is_main)  # before config.json records it
    if dist.is_main:
        for key in cfg.hosted_only_keys_set():
            log.info("notice: `%s` has no meaning for a local run and is ignored", key)
        for line in cfg.notices():
            log.info("notice: %s", line)
    load_env_files(cfg.env_files, config_dir)
    run_dir, record = open_run_dir(cfg, resume, dist)
    rec = Recorder(run_dir, record, dist, cfg.usage.price_per_device_hour)
    run = RunContext(cfg, rec, StopFlag(), latest_for_resume(run_dir, resume, dist), on_step)
    run.stop.install()
    if dist.is_main:
        print(f"rltrain: run directory {run_dir}", flush=True)
    ended = False  # the loop returned on every rank's own terms: ranks meet before leaving
    try:
        rec.loggers = open_loggers(cfg.wandb, run_dir, record.data["config"], dist.is_main)
        _loop(run, device)
        ended = True
    except KeyboardInterrupt:
        rec.set_status("cancelled", error="interrupted twice: stopped without a final checkpoint")
    except BaseException as err:
        _fail(rec, err)
        raise
    finally:
        try:
            if run.engine is not None:  # the workers, the endpoint, the engine: however the run ended
                run.engine.close()
        finally:
            rec.write_curves()  # however the run ended
            dist.close(synced=ended)
    if dist.is_main:
        print(f"rltrain: run {rec.status} — {run_dir}", flush=True)
    return rec


def _fail(rec: Recorder, err: BaseException) -> None:
    """Record the failure; a rank's own error first tells the other ranks to stop."""
    message = str(err) if isinstance(err, RankAborted) else f"{type(err).__name__}: {err}"
    if not isinstance(err, RankAborted):
        # the first failing rank's message wins: under FSDP the others fail next, inside a collective
        message = rec.dist.abort(message)
    rec.tick()
    rec.save()
    rec.set_status("failed", error=message)
    if rec.dist.is_main:
        (rec.run_dir / "error.log").write_text(traceback.format_exc())


def _setup(
    run: RunContext, spec: RunSpec, sampler: PromptSampler, device: torch.device
) -> tuple[Engine, Resumed]:
    """The engine, and where to continue (a resumed run restores its checkpoint's state)."""
    rec = run.recorder
    policy, state = start_policy(spec, rec, run.resume_from, device)
    if state is not None:
        sampler.load_state_dict(state["sampler"])
        run.guards.load_state_dict(state)
    live = rec.run_dir / "adapters" / "live"  # eval-only environments follow the training ones
    resumed = Resumed(policy.version, state.get("in_flight") if state is not None else None)
    return build_engine(spec, policy, live_dir=live, dist=rec.dist), resumed


def _update(engine: Engine, ro: StepRollouts, dist: Dist) -> dict[str, float]:
    engine.backend.sleep()  # a GPU shared with vLLM: free its memory while the trainer works
    try:
        metrics = train_step(engine.policy, ro.mine.samples, engine.settings, dist=dist)
    finally:
        engine.backend.wake_up()
    if dist.enabled:  # ranks must take identical steps: compare a checksum of the weights
        metrics["lora_checksum"] = dist.check_in_sync(engine.policy.full_trainable())
    return metrics


def _checkpoint(run: RunContext, engine: Engine, source: RolloutSource, step: int) -> None:
    rec = run.recorder
    if rec.checkpoints and rec.checkpoints[-1].endswith(f"step_{step}"):
        return
    ahead = inflight.keep(source.in_flight(step), run.cfg.async_level, rec.dist)  # may wait for them
    rec.tick()
    extra = {"sampler": source.position, "in_flight": ahead, **rec.state_dict(), **run.guards.state_dict()}
    keep = run.cfg.checkpoints
    new = str(rec.run_dir / "checkpoints" / f"step_{step}")
    path = ckpt.save(
        rec.run_dir,
        step,
        engine.policy,
        extra,
        dist=rec.dist,
        keep_last=keep.keep_last,
        keep_best=keep.keep_best,
        protect=run.guards.protect([*rec.checkpoints, new]),
    )
    kept = {str(p) for p in ckpt.complete_checkpoints(rec.run_dir)} | {str(path)}
    rec.checkpoints = [c for c in rec.checkpoints if c in kept] + [str(path)]
    rec.save(durable=True)
    rec.write_curves()


def _timed(batch: Batch, train: dict[str, float], sync: dict[str, float], t: list[float]) -> dict[str, Any]:
    """A step's metrics row; `t` holds the clock at the start, after the rollouts came, after training
    and after syncing. rollout_s is what the trainer waited for its rollouts (async: what sampling
    ahead did not hide); gen_tok_s is per second of sampling (sample_s, the engine's time for this
    batch, beside training or not), never per second waited, which sampling ahead shrinks to ~0."""
    rollout_s, train_s, sync_s, step_s = t[1] - t[0], t[2] - t[1], t[3] - t[2], t[3] - t[0]
    m = batch.rollouts.metrics
    return {
        **m,
        **train,
        **sync,
        "rollout_s": rollout_s,
        "train_s": train_s,
        "sync_s": sync_s,
        "step_s": step_s,
        "sample_s": batch.sample_s,
        "gen_tok_s": m["output_tokens"] / max(batch.sample_s, 1e-9),
        "train_tok_s": train.get("training_tokens", 0.0) / max(train_s, 1e-9),
        "tok_s": (m["input_tokens"] + m["output_tokens"]) / max(step_s, 1e-9),
    }


def _evals(
    cfg: Config, source: RolloutSource, step: int, sampling: SamplingParams, here: bool
) -> dict[str, float]:
    """The evaluations due after `step`; `here`: this rank runs them (the main rank, or every rank
    when sampling is a collective)."""
    plans = due(cfg, step, trained=len(cfg.env))
    return source.evaluate(plans, sampling) if plans and here else {}


def _loop(run: RunContext, device: torch.device) -> None:
    cfg, rec, dist = run.cfg, run.recorder, run.recorder.dist
    spec = resolve(cfg)
    sampler = PromptSampler(spec.slots, cfg.run.seed)
    engine, resumed = _setup(run, spec, sampler, device)
    start = resumed.step
    run.engine = engine
    if cfg.run.tensorboard:
        rec.open_tensorboard()
    rec.set_status("running")
    first_sync = engine.sync.push_first(start)
    source = make_source(cfg, engine, sampler, dist, resumed)
    here = dist.is_main or engine.backend.collective
    try:
        if start == 0 and (base := _evals(cfg, source, 0, engine.prompting.sampling(0), here)):
            run.guards.baseline(base)
            rec.log_step(0, base, [])  # the base model, before any update
        step = _steps(run, engine, source, start, first_sync)
        if step > start or not rec.checkpoints:
            _checkpoint(run, engine, source, step)  # with the producer's batches in flight
    except BaseException:
        engine.abort()  # a producer mid-episode ends now, not after its environment's timeouts
        raise
    finally:
        source.close()  # the producer stops before the engine it owns
    engine.close()
    stopped = dist.any(run.stop.requested)  # every rank must join this collective
    if run.guards.stopped is not None:  # a guard stopped it: failed, naming the signal and numbers
        rec.finish("failed", run.guards.stopped)
    else:
        rec.finish(
            "cancelled" if stopped else "succeeded", f"stopped by {run.stop.signal_name}" if stopped else None
        )


def _steps(
    run: RunContext, engine: Engine, source: RolloutSource, start: int, first_sync: dict[str, float]
) -> int:
    """Step after step: rollouts, update, adapter to the engine, record. Returns the last step trained."""
    cfg, rec, dist = run.cfg, run.recorder, run.recorder.dist
    skips = NonFiniteUpdates(cfg.algorithm.max_nonfinite_skips)
    here = dist.is_main or engine.backend.collective
    step = start
    with Progress(cfg.max_steps, start, enabled=cfg.run.progress and dist.is_main) as bar:
        for step in range(start + 1, cfg.max_steps + 1):
            if dist.any(run.stop.requested):
                return step - 1
            t = [time.perf_counter()]
            batch = source.next(step)
            if dist.any(run.stop.requested):  # drop this step's rollouts; resume redraws the same prompts
                source.rewind()
                return step - 1
            t.append(time.perf_counter())
            source.before_update(step)
            train_metrics = _update(engine, batch.rollouts, dist)
            source.consumed(batch)
            t.append(time.perf_counter())
            sync = {**first_sync, **batch.extra, **source.publish(step, engine.sync.export(step))}
            first_sync = {}
            model_type = engine.sync.settings.model_type
            ckpt.export_copy(
                rec.run_dir, step, engine.policy, settings=cfg.adapters, model_type=model_type, dist=dist
            )
            t.append(time.perf_counter())
            metrics = _timed(batch, train_metrics, sync, t)
            rec.count(
                metrics["input_tokens"], metrics["output_tokens"], train_metrics.get("training_tokens", 0)
            )
            skips.observe(train_metrics)
            metrics.update(nonfinite_skips=float(skips.total), world_size=float(dist.world))
            metrics.update(_evals(cfg, source, step, batch.rollouts.sampling, here))
            decision = run.guards.check(step, metrics, rec.checkpoints)
            rec.log_step(step, metrics, batch.rollouts.records)
            bar.update(step, metrics)
            if run.on_step is not None:
                run.on_step(step, metrics)
            if decision.action == "stop":
                return step
            if decision.action == "rollback":
                run.guards.roll_back(decision, engine, source, step)
                _checkpoint(run, engine, source, step)  # the restored weights, at this step
            if cfg.checkpoints.interval and step % cfg.checkpoints.interval == 0:
                _checkpoint(run, engine, source, step)
    return step
