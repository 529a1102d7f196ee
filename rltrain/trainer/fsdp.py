"""Sharding the policy over the ranks with torch FSDP2 (`fully_shard`), for models too large for one device.

Each decoder layer is its own unit, then the root, as accelerate's FSDP2 plugin wraps them. We call
`fully_shard` ourselves rather than `Accelerator.prepare`: accelerate turns its FSDP plugin into plain
DDP when the process group is CPU/gloo, so its path could never run in CI; this one runs on both.

Under FSDP every forward is a collective (layers are all-gathered on the fly), so every rank must run
the same number of forwards and backwards: the trainer pads micro-batches, the hf backend keeps
decoding until every rank is done, and evaluation runs on every rank.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from rltrain.config import FsdpConfig


def settings(cfg: FsdpConfig, world: int) -> FsdpConfig | None:
    """The FSDP settings to shard with, or None (off, or a single process: nothing to shard over)."""
    chosen = requested(cfg)
    if not chosen.enabled:
        return None
    if world <= 1:
        print("rltrain: notice: fsdp is on, but one process has nothing to shard over", flush=True)
        return None
    return chosen


def requested(cfg: FsdpConfig) -> FsdpConfig:
    """The config's FSDP settings, or `accelerate launch --use_fsdp`'s (its env vars) when it set them."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() not in ("1", "true"):
        return cfg
    reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower()
    offload = os.environ.get("FSDP_OFFLOAD_PARAMS", "false").lower()
    return FsdpConfig(
        enabled=True,
        # FSDP1-style sharding strategies name the same choice
        reshard_after_forward=reshard in ("true", "1", "full_shard", "hybrid_shard"),
        cpu_offload=offload in ("true", "1"),
    )


def _layer_classes(model: Any) -> tuple[type, ...]:
    names = set(getattr(model.get_base_model(), "_no_split_modules", None) or [])
    found = {type(m) for m in model.modules() if type(m).__name__ in names}
    if not found:
        raise RuntimeError(f"fsdp: no decoder layer class ({sorted(names)}) found to shard this model by")
    return tuple(found)


def _from_rank0(cfg: FsdpConfig) -> bool:
    """Rank 0 alone reads the checkpoint and hands out shards (not with CPU offload: there the
    shards must stay in host memory, which `to_empty(device)` would not give)."""
    return not cfg.cpu_offload


def builds_on_meta(cfg: FsdpConfig) -> bool:
    """Whether this rank builds the model without weights (rank 0 sends them)."""
    import torch.distributed as td

    return _from_rank0(cfg) and td.get_rank() != 0


def _non_persistent_buffers(model: Any) -> list[str]:
    """Buffers outside the state dict (e.g. rotary inv_freq): to_empty() leaves them garbage."""
    return [
        f"{name}.{buf}" if name else buf
        for name, module in model.named_modules()
        for buf in module._non_persistent_buffers_set
    ]


def shard(model: Any, cfg: FsdpConfig, device: torch.device) -> None:
    """Shard a peft model in place: one FSDP unit per decoder layer, then the root."""
    if any(type(m).__name__ == "ParamWrapper" for m in model.modules()):
        raise RuntimeError(
            "fsdp: LoRA on expert parameters (lora.target_parameters, MoE models) is not supported "
            "with fsdp.enabled; target attention/MLP modules only or turn fsdp off"
        )
    if cfg.cpu_offload and device.type != "cuda":
        raise RuntimeError("fsdp.cpu_offload needs a CUDA device (on CPU the shards live in host memory)")
    if not _from_rank0(cfg):
        _fully_shard(model, cfg, device)
        return
    import torch.distributed as td
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    rank0 = td.get_rank() == 0
    full_sd = model.state_dict() if rank0 else {}  # whole CPU tensors, rank 0 only
    extra = _non_persistent_buffers(model)
    kept = {n: b.clone() for n, b in model.named_buffers() if n in extra} if rank0 else {}
    model.to("meta")
    model.get_base_model().tie_weights()  # moving to meta unties shared embeddings
    _fully_shard(model, cfg, device)
    model.to_empty(device=device)
    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, full_sd, options=opts)
    for name, buf in model.named_buffers():
        if name in extra:
            if rank0:
                buf.copy_(kept[name])
            td.broadcast(buf, src=0)


def _fully_shard(model: Any, cfg: FsdpConfig, device: torch.device) -> None:
    from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, OffloadPolicy, fully_shard

    offload: OffloadPolicy = CPUOffloadPolicy() if cfg.cpu_offload else OffloadPolicy()
    layers = _layer_classes(model)
    module: torch.nn.Module
    for module in list(model.modules()):
        if isinstance(module, layers):
            fully_shard(module, reshard_after_forward=cfg.reshard_after_forward, offload_policy=offload)
    fully_shard(model, offload_policy=offload)  # root: torch keeps it gathered after forward
    for module in model.modules():
        if isinstance(module, FSDPModule):
            # the loss is normalised over the global batch: ranks' gradients add up, never average;
            # a plain SUM (gloo has no PREMUL_SUM, which a divide factor alone would ask for)
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full(t: Tensor) -> Tensor:
    """The whole tensor (gathered from every rank when sharded: a collective), detached."""
    from torch.distributed.tensor import DTensor

    return (t.full_tensor() if isinstance(t, DTensor) else t).detach()


def like(value: Tensor, param: Tensor) -> Tensor:
    """`value` (a whole tensor, the same on every rank) laid out as `param` is (this rank's shard)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    value = value.to(param.device, param.dtype)
    if isinstance(param, DTensor):
        return distribute_tensor(value, param.device_mesh, param.placements)
    return value


def optimizer_state(model: Any, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The whole optimizer state keyed by parameter name (a collective; rank 0 gets the content)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=opts)  # type: ignore[return-value]


def load_optimizer_state(model: Any, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Inverse of `optimizer_state`: every rank passes the whole state and keeps its shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
