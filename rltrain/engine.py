"""The working parts of a run, built once around the loaded policy: the engine that samples, the
collector that scores, the adapter bridge, and the source the loop draws each step's rollouts from."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig

from rltrain.adapter_sync import AdapterSync, SyncSettings, landed_check, landed_tolerance, trainer_probe
from rltrain.config import Config
from rltrain.data import EnvSlot, PromptSampler
from rltrain.distributed import Dist
from rltrain.envs.scoring import Scorer
from rltrain.families import checkpoint_model_type
from rltrain.models import resolve_model_path
from rltrain.rollout.backend import RolloutBackend
from rltrain.rollout.collect import Collector, GroupSettings
from rltrain.rollout.episodes import EpisodeLimits
from rltrain.rollout.factory import TrainerModel, make_backend
from rltrain.rollout.prompting import PromptEncoder, Prompting, template_kwargs
from rltrain.rundir import env_specs
from rltrain.sizing import Sizing, plan
from rltrain.sources import Adapter, AsyncSource, Parts, SerialSource
from rltrain.trainer.model import Policy, load_tokenizer
from rltrain.trainer.step import TrainSettings

log = logging.getLogger("rltrain")
Source = SerialSource | AsyncSource


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


def size_run(cfg: Config, slots: list[EnvSlot]) -> Sizing:
    """The engine's context and KV cache for this run's data (drops prompts over seq_len)."""
    path = resolve_model_path(cfg.model)
    encoder = PromptEncoder(load_tokenizer(path), template_kwargs(cfg))
    return plan(cfg, slots, encoder, AutoConfig.from_pretrained(path))


def build_engine(
    cfg: Config, policy: Policy, slots: list[EnvSlot], *, live_dir: Path, dist: Dist, sizing: Sizing
) -> Engine:
    """Backend, prompting, collector and adapter sync around a loaded policy."""
    trainer = TrainerModel(
        policy.model,
        policy.tokenizer,
        policy.device,
        policy.dtype,
        policy.sharded,
        policy.lock,
        lambda: policy.version,
    )
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


def make_source(cfg: Config, engine: Engine, sampler: PromptSampler, dist: Dist, start: int) -> Source:
    """Serial, or a producer thread `max_async_level` steps ahead where the backend allows it."""
    parts = Parts(cfg, engine.collector, sampler, engine.prompting, dist)
    backend = engine.backend
    if cfg.async_level == 0:
        return SerialSource(parts, engine.sync.push)
    if not backend.samples_beside_training:
        if dist.is_main:
            log.info(
                "notice: max_async_level %d: this backend samples in step with training", cfg.async_level
            )
        return SerialSource(parts, engine.sync.push)

    def load(adapter: Adapter) -> dict[str, float]:  # on the producer's thread: it owns the engine
        out = engine.sync.load(adapter.path, adapter.version)
        if adapter.probe is not None:
            tol = engine.sync.settings.tolerance
            out["landed_diff"] = landed_check(backend, engine.policy, tol, adapter.probe)
        return out

    _share_cores(engine)
    return AsyncSource(parts, start, load)


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


def publish(source: Source, engine: Engine, step: int) -> dict[str, float]:
    """The adapter after `step` reaches the engine: synced now (serial) or handed to the producer."""
    if isinstance(source, SerialSource):
        return source.published(step)
    probe = trainer_probe(engine.policy) if engine.sync.check_due(step) else None
    return source.published(Adapter(step, engine.sync.export(step), probe))
