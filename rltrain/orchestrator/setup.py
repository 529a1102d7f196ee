"""The working parts of a run, built once from its spec around the loaded policy: the engine that
samples, the collector that scores, the adapter bridge; a resumed run's starting point; and the
rollout source the loop draws from (`make_source`)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rltrain import checkpoint as ckpt
from rltrain.config import Config
from rltrain.distributed import Dist
from rltrain.envs.scoring import Scorer
from rltrain.kinds.base import RunnerContext
from rltrain.orchestrator import inflight
from rltrain.orchestrator.adapter_sync import AdapterSync, LandedRule, SyncSettings
from rltrain.orchestrator.assemble import GroupSettings
from rltrain.orchestrator.backends import TrainerModel, make_backend
from rltrain.orchestrator.collect import Collector
from rltrain.orchestrator.producer import AsyncSource
from rltrain.orchestrator.prompts import PromptSampler
from rltrain.orchestrator.slots import worker_specs
from rltrain.orchestrator.sources import Draw, RolloutSource, SerialSource
from rltrain.orchestrator.spec import RunSpec
from rltrain.record import truncate_jsonl
from rltrain.recorder import Recorder
from rltrain.rollout.backend import RolloutBackend
from rltrain.rollout.episodes import EpisodeLimits
from rltrain.rollout.prompting import Prompting
from rltrain.trainer import fsdp
from rltrain.trainer.model import Policy, load_policy
from rltrain.trainer.step import TrainSettings

log = logging.getLogger("rltrain")


@dataclass
class Engine:
    """The working parts of a run, built once."""

    policy: Policy
    backend: RolloutBackend
    prompting: Prompting
    collector: Collector
    sync: AdapterSync
    settings: TrainSettings
    closed: bool = False

    def abort(self) -> None:
        """Stop environment code at once (a step failed, or Ctrl-C twice): episodes still running, a
        producer's included, end with an error instead of waiting out their timeouts."""
        self.collector.abort()

    def close(self) -> None:
        """The runners (the endpoint), the worker processes, the engine: once, on every exit path."""
        if self.closed:
            return
        self.closed = True
        try:
            self.collector.close()
        finally:
            self.backend.close()


def build_engine(spec: RunSpec, policy: Policy, *, live_dir: Path, dist: Dist) -> Engine:
    """Backend, prompting, collector and adapter sync around a loaded policy."""
    cfg = spec.cfg
    trainer = TrainerModel(
        policy.model,
        policy.tokenizer,
        policy.device,
        policy.dtype,
        policy.sharded,
        policy.lock,
        lambda: policy.version,
    )
    backend = make_backend(spec, trainer, dist)
    prompting = Prompting.build(cfg, policy.tokenizer, policy.model.generation_config.eos_token_id)
    drop = any(f.type == "zero_advantage" for f in cfg.pre_batch_filters)
    groups = GroupSettings(cfg.rollouts_per_example, cfg.algorithm.scale_rewards, drop)
    limits = EpisodeLimits(
        max_context=spec.sizing.max_model_len,
        turn_timeout_s=cfg.scoring.turn_timeout_s,
        episode_timeout_s=cfg.scoring.episode_timeout_s,
        max_env_chars=cfg.scoring.max_env_chars,
    )
    scorer = Scorer.start(cfg.scoring, worker_specs(spec.all_slots))
    ctx = RunnerContext(backend, prompting.encoder, limits, scorer, spec.model_path)
    sync = SyncSettings(
        live_dir / f"rank{dist.rank}" if dist.enabled else live_dir,  # each engine reads its own copy
        spec.model_type,
        LandedRule(override=cfg.rollout.landed_check_tolerance),
        cfg.rollout.landed_check_interval,
    )
    return Engine(
        policy,
        backend,
        prompting,
        Collector(spec.all_slots, ctx, groups),
        AdapterSync(backend, policy, sync),
        TrainSettings.from_config(cfg),
    )


@dataclass
class Resumed:
    """Where a run starts: the step it continues after (0: a new run), and the batches its checkpoint kept
    in flight (inflight.py)."""

    step: int
    in_flight: dict[str, Any] | None = None


def start_policy(
    spec: RunSpec, rec: Recorder, resume_from: Path | None, device: torch.device
) -> tuple[Policy, dict[str, Any] | None]:
    """The policy to train: fresh, warm-started from `checkpoint_id`, or restored from the checkpoint a
    resumed run continues from; with that checkpoint's state (None for a new run)."""
    cfg = spec.cfg
    init_adapter = resume_from or (Path(cfg.checkpoint_id) if cfg.checkpoint_id else None)
    shard = fsdp.settings(cfg.fsdp, rec.dist.world)
    policy = load_policy(cfg, spec.model_path, init_adapter, device, shard, tokenizer=spec.tokenizer)
    if resume_from is None:
        return policy, None
    state = ckpt.load_trainer_state(resume_from)
    ckpt.restore(policy, state)
    policy.version = int(state["step"])
    rec.load_state_dict(state, policy.version, [str(p) for p in ckpt.complete_checkpoints(rec.run_dir)])
    return policy, state


def latest_for_resume(run_dir: Path, resume: Path | None, dist: Dist) -> Path | None:
    """The checkpoint a resumed run continues from (None: a new run, or none complete yet)."""
    latest = ckpt.latest_checkpoint(run_dir) if resume is not None else None
    if resume is not None and latest is None and dist.is_main:
        # killed before its first complete checkpoint: the run starts over, so drop the dead rows
        truncate_jsonl(run_dir / "metrics.jsonl", 0)
    return latest


def make_source(
    cfg: Config, engine: Engine, sampler: PromptSampler, dist: Dist, resumed: Resumed
) -> RolloutSource:
    """Serial, or a producer thread `max_async_level` steps ahead where the backend allows it."""
    draw = Draw(engine.collector, sampler, engine.prompting, dist, cfg.prompts_per_step)
    if cfg.async_level == 0:
        return SerialSource(draw, engine.sync)
    if not engine.backend.samples_beside_training:
        if dist.is_main:
            log.info(
                "notice: max_async_level %d: this backend samples in step with training", cfg.async_level
            )
        return SerialSource(draw, engine.sync)
    _share_cores(engine)
    kept = inflight.restore(resumed.in_flight, cfg.async_level, dist)
    return AsyncSource(draw, engine.sync, resumed.step, ahead=cfg.async_level, last=cfg.max_steps, kept=kept)


def _share_cores(engine: Engine) -> None:
    """On CPU, the producer's sampling and the trainer's update run at once in this process, and
    torch gives each op every core. Measured on 2 cores (docs/benchmarks.md, bench_async), async over
    serial on a plain task / behind a slow judge: one thread each 1.34x / 0.98x; trainer 2 + producer 1
    (torch's count is per thread) 0.93x / 1.26x; 2 + 2, oversubscribed, 0.77x / 1.16x. One each is
    kept: the best on the plain task and no worse than serial. An OMP_NUM_THREADS the user set wins."""
    if engine.policy.device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return
    threads = max(1, torch.get_num_threads() // 2)
    if threads != torch.get_num_threads():
        log.info("notice: sampling ahead on CPU: %d torch threads each for sampling and training", threads)
        torch.set_num_threads(threads)
