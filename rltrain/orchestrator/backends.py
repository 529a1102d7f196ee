"""Build the configured rollout backend for one rank."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rltrain.config import Config, RolloutConfig
from rltrain.distributed import Dist
from rltrain.families import backend_for, engine_overrides
from rltrain.models import resolve_model_path
from rltrain.rollout.backend import RolloutBackend
from rltrain.rollout.hf_backend import HFBackend
from rltrain.sizing import Sizing

log = logging.getLogger("rltrain")


@dataclass(frozen=True)
class TrainerModel:
    """The trainer's model as the rollout side may use it: the hf backend samples from it directly."""

    model: Any  # the peft model
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    sharded: bool  # under FSDP: only its own forward runs, and every token is a collective
    lock: Any = None  # held by the trainer while it writes the weights (a live snapshot takes it too)
    version: Callable[[], int] = lambda: 0  # the trainer's adapter version (optimizer steps applied)


def make_backend(
    cfg: Config, trainer: TrainerModel, dist: Dist | None = None, sizing: Sizing | None = None
) -> RolloutBackend:
    """The configured rollout backend for this rank (`dist`: the ranks, when there are several)."""
    dist = dist or Dist()
    model_path = resolve_model_path(cfg.model)
    # a family vLLM cannot serve here falls back to hf with a one-line notice, never a crash inside vLLM
    name, notice = backend_for(model_path, cfg.rollout.backend, trainer.device.type)
    if notice:
        print(f"rltrain: {notice}", flush=True)

    def decode(ids: list[int]) -> str:
        return str(trainer.tokenizer.decode(ids, skip_special_tokens=True))

    if name == "hf":
        return HFBackend(
            decode,
            trainer.tokenizer.pad_token_id,
            trainer.device,
            policy_model=trainer.model,
            max_batch=cfg.max_inflight_rollouts,
            # the lean decoder reads whole weights; a sharded model only runs through its own forward
            lean=cfg.rollout.lean_decoder and not trainer.sharded,
            all_done=dist.all_done if trainer.sharded else None,
            live=(trainer.lock, trainer.version),
        )
    from rltrain.rollout.vllm_backend import VLLMBackend  # the only path that imports vllm

    tp = cfg.rollout.tensor_parallel_size
    if dist.enabled and tp > 1 and trainer.device.type == "cuda":
        raise RuntimeError(
            f"rollout.tensor_parallel_size = {tp} with {dist.world} processes: each rank's vLLM engine "
            "lives on its rank's GPU; use tensor parallelism with one process, or fsdp with tp = 1"
        )
    return VLLMBackend(
        model_path,
        rollout=cfg.rollout,
        dtype=str(trainer.dtype).removeprefix("torch."),
        max_lora_rank=cfg.lora.rank,
        seed=cfg.run.seed,
        max_model_len=sizing.max_model_len if sizing else None,
        kv_cache_bytes=sizing.kv_cache_bytes if sizing else None,
        device=trainer.device.type,
        device_ids=engine_devices(cfg.rollout, trainer.device, dist),
        max_num_seqs=cfg.max_inflight_rollouts,
        engine_overrides=engine_overrides(model_path),
    )


def engine_devices(rollout: RolloutConfig, device: torch.device, dist: Dist) -> list[int] | None:
    """The GPUs this rank's engine runs on: its slice of rollout.devices (split placement), else the
    rank's own GPU (colocated); None on CPU, or for vLLM's default (the first GPUs) in one process."""
    tp = rollout.tensor_parallel_size
    if device.type != "cuda":
        if rollout.devices and dist.is_main:
            log.info("notice: rollout.devices names GPUs; this run is on %s and ignores it", device.type)
        return None
    if rollout.devices:
        need = dist.world * tp
        if len(rollout.devices) < need:
            raise ValueError(
                f"rollout.devices lists {len(rollout.devices)} GPUs; {dist.world} rank(s) x "
                f"tensor_parallel_size {tp} need {need}"
            )
        return rollout.devices[dist.rank * tp : (dist.rank + 1) * tp]
    # vLLM picks devices from its own config (indices into CUDA_VISIBLE_DEVICES, like torch's), so
    # without this every rank's engine would take GPU 0
    return list(range(device.index, device.index + tp)) if device.index else None
