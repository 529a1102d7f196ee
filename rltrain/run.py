"""The training loop, top to bottom: sample -> score -> train -> sync adapter -> record."""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rltrain import checkpoint as ckpt
from rltrain.algo.loss import LossConfig
from rltrain.config import Config
from rltrain.distributed import Dist, RankAborted
from rltrain.envs.scoring import Scorer
from rltrain.models import find_spec, resolve_model_path
from rltrain.rollout.backend import RolloutBackend
from rltrain.rollout.collect import PromptEncoder, Rollouts, collect, rollout_metrics
from rltrain.rollout.factory import make_backend, sync_adapter
from rltrain.rundir import load_env_files
from rltrain.session import Session, open_run
from rltrain.trainer import fsdp
from rltrain.trainer.model import Policy, load_policy
from rltrain.trainer.step import train_step
from rltrain.types import Sample, SamplingParams

log = logging.getLogger("rltrain")


def loss_config(cfg: Config) -> LossConfig:
    a = cfg.algorithm
    return LossConfig(a.variant, a.clip_eps_low, a.eps_high, a.kl_coef, a.mismatch.mode, a.mismatch.cap)


def template_kwargs(cfg: Config) -> dict[str, Any]:
    spec = find_spec(cfg.model)
    kwargs: dict[str, Any] = dict(spec.chat_template_kwargs) if spec else {}
    if cfg.sampling.enable_thinking is not None:
        kwargs["enable_thinking"] = cfg.sampling.enable_thinking
    if cfg.sampling.reasoning_effort is not None:
        kwargs["reasoning_effort"] = cfg.sampling.reasoning_effort
    return kwargs


def train(cfg: Config, resume: Path | None = None, config_dir: Path = Path(".")) -> Session:
    """Run (or resume) a training run; returns the session with the final record."""
    dist = Dist()
    device = dist.init(cfg.run.device)
    if dist.is_main:
        for key in cfg.hosted_only_keys_set():
            log.info("notice: `%s` has no meaning for a local run and is ignored", key)
    load_env_files(cfg.env_files, config_dir)
    session, resume_from = open_run(cfg, resume, dist)
    session.stop.install()
    if dist.is_main:
        print(f"rltrain: run directory {session.run_dir}", flush=True)
    try:
        _loop(session, cfg, resume_from, device)
    except KeyboardInterrupt:
        session.set_status("cancelled", error="interrupted twice: stopped without a final checkpoint")
    except BaseException as err:
        _fail(session, err)
        raise
    finally:
        dist.close()
    if dist.is_main:
        print(f"rltrain: run {session.record.status} — {session.run_dir}", flush=True)
    return session


def _fail(session: Session, err: BaseException) -> None:
    """Record the failure; a rank's own error first tells the other ranks to stop."""
    message = str(err) if isinstance(err, RankAborted) else f"{type(err).__name__}: {err}"
    if not isinstance(err, RankAborted):
        # the first failing rank's message wins: under FSDP the others fail next, inside a collective
        message = session.dist.abort(message)
    session.tick()
    session.save_record()
    session.set_status("failed", error=message)
    if session.dist.is_main:
        (session.run_dir / "error.log").write_text(traceback.format_exc())


@dataclass
class Engine:
    """The working parts of a run, built once."""

    policy: Policy
    backend: RolloutBackend
    encoder: PromptEncoder
    scorer: Scorer
    stop_ids: tuple[int, ...]


def _setup(session: Session, cfg: Config, resume_from: Path | None, device: torch.device) -> Engine:
    init_adapter = resume_from or (Path(cfg.checkpoint_id) if cfg.checkpoint_id else None)
    shard = fsdp.settings(cfg.fsdp, session.dist.world)
    policy = load_policy(cfg, resolve_model_path(cfg.model), init_adapter, device=device, shard=shard)
    if resume_from is not None:
        state = ckpt.load_trainer_state(resume_from)
        ckpt.restore(policy, state)
        session.restore(state, int(state["step"]))
    backend = make_backend(cfg, policy, session.run_dir, session.dist)
    eos = policy.model.generation_config.eos_token_id
    return Engine(
        policy,
        backend,
        PromptEncoder(policy.tokenizer, template_kwargs(cfg)),
        session.make_scorer(),
        tuple(session.stop_token_ids(policy.tokenizer, eos)),
    )


def _sampling(cfg: Config, engine: Engine, step: int) -> SamplingParams:
    s = cfg.sampling
    # one seed per step: a resumed run samples exactly what the uninterrupted run sampled
    return SamplingParams(
        s.max_tokens, s.temperature, s.top_p, s.top_k, engine.stop_ids, seed=cfg.run.seed * 1_000_003 + step
    )


def _update(cfg: Config, engine: Engine, samples: list[Sample], dist: Dist) -> dict[str, float]:
    a = cfg.algorithm
    engine.backend.sleep()  # a GPU shared with vLLM: free its memory while the trainer works
    try:
        return train_step(
            engine.policy,
            samples,
            loss_config(cfg),
            a.micro_batch_size,
            cfg.sampling.max_tokens,
            cfg.sampling.temperature,
            a.max_grad_norm,
            dist=dist,
        )
    finally:
        engine.backend.wake_up()


def _rollouts(session: Session, engine: Engine, cfg: Config, step: int) -> tuple[Rollouts, dict[str, Any]]:
    """This rank's share of the step's prompts, sampled and scored; metrics over every rank's share."""
    batch = session.sampler.next_batch(step, cfg.prompts_per_step)
    start, stop = session.dist.shard(len(batch))
    sampling = replace(_sampling(cfg, engine, step), seed_offset=start)
    ro = collect(
        engine.backend,
        engine.encoder,
        session.slots,
        batch[start:stop],
        cfg.rollouts_per_example,
        sampling,
        engine.scorer,
        cfg.algorithm.scale_rewards,
        any(f.type == "zero_advantage" for f in cfg.pre_batch_filters),
    )
    shares = session.dist.all_gather((ro.records, ro.errored, ro.filtered_groups))
    records = [r for recs, _, _ in shares for r in recs]
    errored: dict[str, int] = {}
    for _, errs, _ in shares:
        for name, count in errs.items():
            errored[name] = errored.get(name, 0) + count
    metrics = rollout_metrics(records, errored, sum(f for _, _, f in shares))
    return ro, {"metrics": metrics, "records": records, "sampling": sampling}


def _loop(session: Session, cfg: Config, resume_from: Path | None, device: torch.device) -> None:
    engine = _setup(session, cfg, resume_from, device)
    policy, backend, dist = engine.policy, engine.backend, session.dist
    session.open_writer()
    session.set_status("running")
    first_sync = sync_adapter(backend, policy, session, session.start_step, first=True)
    step = session.start_step
    with session.progress() as bar:
        for step in range(session.start_step + 1, cfg.max_steps + 1):
            if dist.any(session.stop.requested):
                step -= 1
                break
            t0 = time.perf_counter()
            position = session.sampler.state_dict()
            ro, gathered = _rollouts(session, engine, cfg, step)
            if dist.any(session.stop.requested):  # drop this step's rollouts; resume redraws the same prompts
                session.sampler.load_state_dict(position)
                step -= 1
                break
            t1 = time.perf_counter()
            train_metrics = _update(cfg, engine, ro.samples, dist)
            if dist.enabled:
                train_metrics["lora_checksum"] = dist.check_in_sync(policy.full_trainable())
            t2 = time.perf_counter()
            sync = {**first_sync, **sync_adapter(backend, policy, session, step)}
            first_sync = {}
            session.export_adapter(step, policy)
            t3 = time.perf_counter()
            metrics = session.step_metrics(
                gathered["metrics"], train_metrics, sync, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)
            )
            session.check_skips(train_metrics)
            session.maybe_eval(step, backend, engine.encoder, gathered["sampling"], engine.scorer, metrics)
            session.log_step(step, metrics, gathered["records"])
            bar.update(step, metrics)
            if cfg.checkpoints.interval and step % cfg.checkpoints.interval == 0:
                session.save_checkpoint(step, policy)
    if step > session.start_step or not session.checkpoints:
        session.save_checkpoint(step, policy)
    engine.scorer.close()
    backend.close()
    stopped = dist.any(session.stop.requested)  # every rank must join this collective
    session.finish("cancelled" if stopped else "succeeded")
