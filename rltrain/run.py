"""The training loop, top to bottom: sample -> score -> train -> sync adapter -> record."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig

from rltrain import checkpoint as ckpt
from rltrain.adapter_sync import AdapterSync, SyncSettings, landed_tolerance
from rltrain.config import Config
from rltrain.data import EnvSlot, PromptSampler
from rltrain.distributed import Dist, RankAborted
from rltrain.envs.scoring import Scorer
from rltrain.evaluate import due, evaluate
from rltrain.families import checkpoint_model_type
from rltrain.models import resolve_model_path
from rltrain.progress import Progress
from rltrain.recorder import Recorder
from rltrain.rollout.backend import RolloutBackend
from rltrain.rollout.collect import Collector, GroupSettings, StepRollouts
from rltrain.rollout.episodes import EpisodeLimits
from rltrain.rollout.factory import TrainerModel, make_backend
from rltrain.rollout.prompting import PromptEncoder, Prompting, template_kwargs
from rltrain.rundir import (
    StopFlag,
    build_slots,
    env_specs,
    eval_entries,
    latest_for_resume,
    load_env_files,
    open_run_dir,
)
from rltrain.sizing import Sizing, plan
from rltrain.trainer import fsdp
from rltrain.trainer.model import Policy, load_policy, load_tokenizer
from rltrain.trainer.step import NonFiniteUpdates, TrainSettings, train_step
from rltrain.types import SamplingParams

log = logging.getLogger("rltrain")
StepCallback = Callable[[int, dict[str, Any]], None]  # (step, metrics) after each step is recorded


@dataclass
class RunContext:
    cfg: Config
    recorder: Recorder
    stop: StopFlag
    resume_from: Path | None  # the checkpoint to continue from
    on_step: StepCallback | None = None


@dataclass
class Engine:
    """The working parts of a run, built once."""

    policy: Policy
    backend: RolloutBackend
    prompting: Prompting
    collector: Collector
    sync: AdapterSync
    settings: TrainSettings

    def close(self) -> None:
        self.collector.close()
        self.backend.close()


def train(
    cfg: Config, resume: Path | None = None, config_dir: Path = Path("."), on_step: StepCallback | None = None
) -> Recorder:
    """Run (or resume) a training run; returns its recorder (run dir, final record)."""
    dist = Dist()
    device = dist.init(cfg.run.device)
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
    try:
        _loop(run, device)
    except KeyboardInterrupt:
        rec.set_status("cancelled", error="interrupted twice: stopped without a final checkpoint")
    except BaseException as err:
        _fail(rec, err)
        raise
    finally:
        dist.close()
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


def size_run(cfg: Config, slots: list[EnvSlot]) -> Sizing:
    """The engine's context and KV cache for this run's data (drops prompts over seq_len)."""
    path = resolve_model_path(cfg.model)
    encoder = PromptEncoder(load_tokenizer(path), template_kwargs(cfg))
    return plan(cfg, slots, encoder, AutoConfig.from_pretrained(path))


def build_engine(
    cfg: Config, policy: Policy, slots: list[EnvSlot], *, live_dir: Path, dist: Dist, sizing: Sizing
) -> Engine:
    """Backend, prompting, collector and adapter sync around a loaded policy."""
    trainer = TrainerModel(policy.model, policy.tokenizer, policy.device, policy.dtype, policy.sharded)
    backend = make_backend(cfg, trainer, dist, sizing)
    prompting = Prompting.build(cfg, policy.tokenizer, policy.model.generation_config.eos_token_id)
    drop = any(f.type == "zero_advantage" for f in cfg.pre_batch_filters)
    groups = GroupSettings(cfg.rollouts_per_example, cfg.algorithm.scale_rewards, drop)
    scorer = Scorer.start(cfg.scoring, env_specs(cfg))
    collector = Collector(backend, prompting.encoder, slots, scorer, groups)
    collector.limits = EpisodeLimits(
        max_context=sizing.max_model_len,
        turn_timeout_s=cfg.scoring.turn_timeout_s,
        episode_timeout_s=cfg.scoring.episode_timeout_s,
    )
    sync = SyncSettings(
        live_dir / f"rank{dist.rank}" if dist.enabled else live_dir,  # each engine reads its own copy
        checkpoint_model_type(resolve_model_path(cfg.model)),
        landed_tolerance(cfg.rollout.landed_check_tolerance, policy.dtype),
        cfg.rollout.landed_check_interval,
    )
    return Engine(
        policy,
        backend,
        prompting,
        collector,
        AdapterSync(backend, policy, sync),
        TrainSettings.from_config(cfg),
    )


def _setup(
    run: RunContext, sampler: PromptSampler, sizing: Sizing, device: torch.device, extra: list[EnvSlot]
) -> tuple[Engine, int]:
    """The engine, and the step to continue after (a resumed run restores its checkpoint's state)."""
    cfg, rec = run.cfg, run.recorder
    init_adapter = run.resume_from or (Path(cfg.checkpoint_id) if cfg.checkpoint_id else None)
    shard = fsdp.settings(cfg.fsdp, rec.dist.world)
    policy = load_policy(cfg, resolve_model_path(cfg.model), init_adapter, device=device, shard=shard)
    start = 0
    if run.resume_from is not None:
        state = ckpt.load_trainer_state(run.resume_from)
        ckpt.restore(policy, state)
        sampler.load_state_dict(state["sampler"])
        start = int(state["step"])
        rec.load_state_dict(state, start, [str(p) for p in ckpt.complete_checkpoints(rec.run_dir)])
    live = rec.run_dir / "adapters" / "live"  # eval-only environments follow the training ones
    slots = sampler.slots + extra
    return build_engine(cfg, policy, slots, live_dir=live, dist=rec.dist, sizing=sizing), start


def _update(engine: Engine, ro: StepRollouts, dist: Dist) -> dict[str, float]:
    engine.backend.sleep()  # a GPU shared with vLLM: free its memory while the trainer works
    try:
        metrics = train_step(engine.policy, ro.mine.samples, engine.settings, dist=dist)
    finally:
        engine.backend.wake_up()
    if dist.enabled:  # ranks must take identical steps: compare a checksum of the weights
        metrics["lora_checksum"] = dist.check_in_sync(engine.policy.full_trainable())
    return metrics


def _checkpoint(run: RunContext, engine: Engine, sampler: PromptSampler, step: int) -> None:
    rec = run.recorder
    if rec.checkpoints and rec.checkpoints[-1].endswith(f"step_{step}"):
        return
    rec.tick()
    extra = {"sampler": sampler.state_dict(), **rec.state_dict()}
    path = ckpt.save(
        rec.run_dir, step, engine.policy, extra, dist=rec.dist, keep_last=run.cfg.checkpoints.keep_last
    )
    kept = {str(p) for p in ckpt.complete_checkpoints(rec.run_dir)} | {str(path)}
    rec.checkpoints = [c for c in rec.checkpoints if c in kept] + [str(path)]
    rec.save(durable=True)


def _timed(
    ro: StepRollouts, train: dict[str, float], sync: dict[str, float], t: list[float]
) -> dict[str, Any]:
    """A step's metrics row; `t` holds the clock at the start, after sampling, training and syncing."""
    rollout_s, train_s, sync_s, step_s = t[1] - t[0], t[2] - t[1], t[3] - t[2], t[3] - t[0]
    m = ro.metrics
    return {
        **m,
        **train,
        **sync,
        "rollout_s": rollout_s,
        "train_s": train_s,
        "sync_s": sync_s,
        "step_s": step_s,
        "gen_tok_s": m["output_tokens"] / max(rollout_s, 1e-9),
        "train_tok_s": train.get("training_tokens", 0.0) / max(train_s, 1e-9),
        "tok_s": (m["input_tokens"] + m["output_tokens"]) / max(step_s, 1e-9),
    }


def _evals(cfg: Config, engine: Engine, step: int, sampling: SamplingParams, dist: Dist) -> dict[str, float]:
    """The evaluations due after `step`, on the main rank (every rank when sampling is a collective)."""
    out: dict[str, float] = {}
    if dist.is_main or engine.backend.collective:
        for plan in due(cfg, step, trained=len(cfg.env)):
            out.update(evaluate(engine.collector, plan, sampling))
    return out


def _loop(run: RunContext, device: torch.device) -> None:
    cfg, rec, dist = run.cfg, run.recorder, run.recorder.dist
    slots = build_slots(cfg)
    extra = build_slots(cfg, eval_entries(cfg)) if cfg.eval is not None and cfg.eval.env else []
    sizing = size_run(cfg, slots + extra)  # before the prompt order: prompts over seq_len leave the data
    sampler = PromptSampler(slots, cfg.run.seed)
    engine, start = _setup(run, sampler, sizing, device, extra)
    skips = NonFiniteUpdates(cfg.algorithm.max_nonfinite_skips)
    if cfg.run.tensorboard:
        rec.open_tensorboard()
    rec.set_status("running")
    first_sync = engine.sync.push(start, first=True)
    step = start
    if start == 0 and (base := _evals(cfg, engine, 0, engine.prompting.sampling(0), dist)):
        rec.log_step(0, base, [])  # the base model, before any update
    with Progress(cfg.max_steps, start, enabled=cfg.run.progress and dist.is_main) as bar:
        for step in range(start + 1, cfg.max_steps + 1):
            if dist.any(run.stop.requested):
                step -= 1
                break
            t = [time.perf_counter()]
            position = sampler.state_dict()
            batch = sampler.next_batch(step, cfg.prompts_per_step)
            ro = engine.collector.collect_share(batch, engine.prompting.sampling(step), dist)
            if dist.any(run.stop.requested):  # drop this step's rollouts; resume redraws the same prompts
                sampler.load_state_dict(position)
                step -= 1
                break
            t.append(time.perf_counter())
            train_metrics = _update(engine, ro, dist)
            t.append(time.perf_counter())
            sync = {**first_sync, **engine.sync.push(step)}
            first_sync = {}
            model_type = engine.sync.settings.model_type
            ckpt.export_copy(
                rec.run_dir, step, engine.policy, settings=cfg.adapters, model_type=model_type, dist=dist
            )
            t.append(time.perf_counter())
            metrics = _timed(ro, train_metrics, sync, t)
            rec.count(
                metrics["input_tokens"], metrics["output_tokens"], train_metrics.get("training_tokens", 0)
            )
            skips.observe(train_metrics)
            metrics.update(nonfinite_skips=float(skips.total), world_size=float(dist.world))
            metrics.update(_evals(cfg, engine, step, ro.sampling, dist))
            rec.log_step(step, metrics, ro.records)
            bar.update(step, metrics)
            if run.on_step is not None:
                run.on_step(step, metrics)
            if cfg.checkpoints.interval and step % cfg.checkpoints.interval == 0:
                _checkpoint(run, engine, sampler, step)
    if step > start or not rec.checkpoints:
        _checkpoint(run, engine, sampler, step)
    engine.close()
    stopped = dist.any(run.stop.requested)  # every rank must join this collective
    rec.finish(
        "cancelled" if stopped else "succeeded", f"stopped by {run.stop.signal_name}" if stopped else None
    )
