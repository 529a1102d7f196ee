"""Build the configured rollout backend and keep its adapter in step with the trainer."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch

from rltrain.adapters import export_adapter, landing_probe
from rltrain.config import Config
from rltrain.distributed import Dist
from rltrain.families import backend_for, checkpoint_model_type, engine_overrides
from rltrain.models import resolve_model_path
from rltrain.rollout.backend import RolloutBackend
from rltrain.rollout.hf_backend import HFBackend
from rltrain.trainer.model import Policy
from rltrain.trainer.step import sequence_logprobs
from rltrain.types import Sample

PROBE_TEXT = "Landed check: the adapter must change these logprobs 0123456789."


class AdapterNotLanded(RuntimeError):
    pass


def make_backend(cfg: Config, policy: Policy, run_dir: Path, dist: Dist | None = None) -> RolloutBackend:
    """The configured rollout backend for this rank (`dist`: the ranks, when there are several)."""
    dist = dist or Dist()
    model_path = resolve_model_path(cfg.model)
    # a family vLLM cannot serve here falls back to hf with a one-line notice, never a crash inside vLLM
    name, notice = backend_for(model_path, cfg.rollout.backend, policy.device.type)
    if notice:
        print(f"rltrain: {notice}", flush=True)

    def decode(ids: list[int]) -> str:
        return str(policy.tokenizer.decode(ids, skip_special_tokens=True))

    if name == "hf":
        return HFBackend(
            decode,
            policy.tokenizer.pad_token_id,
            policy.device,
            policy_model=policy.model,
            max_batch=cfg.max_inflight_rollouts,
            # the lean decoder reads whole weights; a sharded model only runs through its own forward
            lean=cfg.rollout.lean_decoder and not policy.sharded,
            all_done=dist.all_done if policy.sharded else None,
        )
    from rltrain.rollout.vllm_backend import VLLMBackend  # the only path that imports vllm

    tp = cfg.rollout.tensor_parallel_size
    if dist.enabled and tp > 1 and policy.device.type == "cuda":
        raise RuntimeError(
            f"rollout.tensor_parallel_size = {tp} with {dist.world} processes: each rank's vLLM engine "
            "lives on its rank's GPU; use tensor parallelism with one process, or fsdp with tp = 1"
        )
    dtype = str(policy.dtype).removeprefix("torch.")
    return VLLMBackend(
        model_path,
        rollout=cfg.rollout,
        dtype=dtype,
        max_lora_rank=cfg.lora.rank,
        seed=cfg.run.seed,
        max_model_len=cfg.rollout.max_model_len,
        device=policy.device.type,
        device_index=policy.device.index,
        max_num_seqs=cfg.max_inflight_rollouts,
        engine_overrides=engine_overrides(model_path),
    )


def landed_tolerance(cfg: Config, dtype: torch.dtype) -> float:
    if cfg.rollout.landed_check_tolerance is not None:
        return cfg.rollout.landed_check_tolerance
    return 1e-3 if dtype == torch.float32 else 0.05


def _probe(policy: Policy) -> Sample:
    ids = policy.tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    cut = max(1, len(ids) // 3)
    comp = ids[cut:]
    return Sample(ids[:cut], comp, [0.0] * len(comp), [1] * len(comp), 0.0, 0.0)


def landed_check(backend: RolloutBackend, policy: Policy, tol: float) -> float:
    """Mean |backend - trainer| logprob on a fixed probe; raises when the adapter did not land."""
    probe = _probe(policy)
    mine = sequence_logprobs(policy, [probe], temperature=1.0)[0]
    theirs = backend.score_logprobs(probe.prompt_ids, probe.completion_ids)
    diff = sum(abs(a - b) for a, b in zip(mine, theirs, strict=True)) / max(len(mine), 1)
    if diff > tol and not policy.sharded:  # sharded: every rank would have to run this forward too
        with policy.model.disable_adapter():
            base = sequence_logprobs(policy, [probe], temperature=1.0)[0]
        to_base = sum(abs(a - b) for a, b in zip(base, theirs, strict=True)) / max(len(base), 1)
        hint = " — it matches the base model: the adapter was ignored" if to_base < diff else ""
        raise AdapterNotLanded(
            f"landed check failed: {backend.name} logprobs differ from the trainer's by {diff:.4g} "
            f"(tolerance {tol:g}){hint}; refusing to train off-policy"
        )
    return diff


def sync_adapter(
    backend: RolloutBackend, policy: Policy, session: Any, step: int, first: bool = False
) -> dict[str, float]:
    """Hand the trainer's adapter to the backend (a new version each step) and check it landed."""
    if isinstance(backend, HFBackend) and backend._shared:
        backend.load_adapter(None, step + 1)
        return {}
    t0 = time.perf_counter()
    live = session.run_dir / "adapters" / "live"
    dist = getattr(session, "dist", None)
    if dist is not None and dist.enabled:  # each rank's engine reads its own copy: no half-written files
        live = live / f"rank{dist.rank}"
    path = live / f"v{step + 1}"
    model_type = checkpoint_model_type(resolve_model_path(session.cfg.model))
    tol = landed_tolerance(session.cfg, policy.dtype)
    if first:  # a fresh adapter (B = 0) equals the base model: prove landing with a loud one instead
        with landing_probe(policy.model):
            probe = export_adapter(policy.model, live / "probe", model_type, policy.adapter_state())
            backend.load_adapter(probe, step + 1)
            probe_diff = landed_check(backend, policy, tol)
        shutil.rmtree(live / "probe", ignore_errors=True)
    export_adapter(policy.model, path, model_type, policy.adapter_state())
    backend.load_adapter(path, step + 1)
    for old in live.glob("v*"):
        if old != path:
            shutil.rmtree(old, ignore_errors=True)
    out = {"adapter_sync_s": time.perf_counter() - t0}
    out.update({f"{backend.name}/{k}": v for k, v in getattr(backend, "timings", {}).items()})
    interval = session.cfg.rollout.landed_check_interval
    if first:
        out["landed_diff"] = probe_diff
    elif interval and step % interval == 0:
        out["landed_diff"] = landed_check(backend, policy, tol)
    return out
