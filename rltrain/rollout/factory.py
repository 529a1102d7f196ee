"""Build the configured rollout backend for one rank."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rltrain.config import Config
from rltrain.distributed import Dist
from rltrain.families import backend_for, engine_overrides
from rltrain.models import resolve_model_path
from rltrain.rollout.backend import RolloutBackend
from rltrain.rollout.hf_backend import HFBackend
from rltrain.sizing import Sizing


@dataclass(frozen=True)
class TrainerModel:
    """The trainer's model as the rollout side may use it: the hf backend samples from it directly."""

    model: Any  # the peft model
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    sharded: bool  # under FSDP: only its own forward runs, and every token is a collective


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
        device_index=trainer.device.index,
        max_num_seqs=cfg.max_inflight_rollouts,
        engine_overrides=engine_overrides(model_path),
    )
