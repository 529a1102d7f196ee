"""Rollouts with vLLM: one engine on the base model, the trainer's LoRA adapter hot-loaded each step.

The only module in rltrain that imports vllm (lazily, inside `VLLMBackend.__init__`), so the rest of the
package imports on machines without it. On CPU the engine runs in this process (vLLM's multi-process
mode costs ~30 s of start-up there and needs a `__main__` guard); on GPU it keeps vLLM's defaults.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rltrain.config import RolloutConfig
from rltrain.rollout.backend import BackendBase
from rltrain.rollout.vllm_process import protect_process_state, silence_known_noise
from rltrain.types import Completion, Group, Request, SamplingParams

GIB = 2**30


def _short(err: BaseException, limit: int = 300) -> str:
    """The error on one line; pydantic puts the useful part of vLLM's config errors on line 2+."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


class VLLMBackend(BackendBase):
    """The `RolloutBackend` on a vLLM engine (see rltrain/rollout/backend.py for the contract)."""

    name = "vllm"
    collective = False  # each rank's engine samples on its own
    reads_live_weights = False  # adapters arrive as files (load_adapter)

    @property
    def samples_beside_training(self) -> bool:
        """Not in sleep mode: the engine sleeps while the trainer works."""
        return not self.sleep_mode

    def __init__(
        self,
        model_path: str,
        *,
        rollout: RolloutConfig,
        dtype: str,
        max_lora_rank: int,
        seed: int,
        max_model_len: int | None = None,
        kv_cache_bytes: int | None = None,
        device: str = "cpu",
        device_ids: list[int] | None = None,
        max_num_seqs: int | None = None,
        engine_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.device = "cpu" if device == "cpu" else "cuda"
        self.device_ids = device_ids  # the GPUs the engine runs on (None: vLLM's default)
        self.sleep_mode = rollout.enable_sleep_mode and self.device == "cuda"
        self.max_lora_rank = max_lora_rank
        self.timings: dict[str, float] = {}
        self.llm: Any = None
        self.adapter_version: int | None = None  # None = base model
        self._lora: Any = None  # the active vllm LoRARequest
        self._next_lora_id = 1  # vLLM caches adapters by id: every load needs a fresh one
        start = time.perf_counter()
        vllm = self._vllm = self._import_vllm()
        length = max_model_len or rollout.max_model_len
        kwargs = self._engine_kwargs(rollout, dtype, seed, length, kv_cache_bytes)
        if max_num_seqs is not None:  # the config's max_inflight_rollouts
            kwargs["max_num_seqs"] = max_num_seqs
        kwargs.update(engine_overrides or {})  # what a model family needs (rltrain.families)
        silence_known_noise()
        try:
            with warnings.catch_warnings():
                # Lazily imported vLLM modules touch a deprecated torch.distributed alias.
                warnings.filterwarnings("ignore", category=FutureWarning, message=".*reduce_op.*")
                if self.device == "cpu":
                    with protect_process_state():
                        self.llm = vllm.LLM(model=model_path, **kwargs)
                else:
                    self.llm = vllm.LLM(model=model_path, **kwargs)
        except Exception as err:
            self._release_distributed()  # so that another engine (or a retry) can start in this process
            raise RuntimeError(self._startup_hint(err)) from err
        self.timings["startup_s"] = time.perf_counter() - start

    def _import_vllm(self) -> Any:
        if self.device == "cpu":
            # Read by vLLM when the engine starts; a value the user set wins.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # rltrain reports progress itself
        try:
            import vllm
            import vllm.lora.request  # noqa: F401  (LoRARequest is not re-exported at the top)
        except ImportError as err:
            raise RuntimeError(
                f"rollout.backend = 'vllm' but vllm does not import ({_short(err)}); on CPU see "
                "docs/vllm.md (uninstall torchvision torchaudio torchcodec triton), or set "
                "rollout.backend = 'hf'"
            ) from err
        return vllm

    def _engine_kwargs(
        self, rollout: RolloutConfig, dtype: str, seed: int, max_model_len: int | None, kv_bytes: int | None
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(
            dtype=dtype,
            seed=seed,
            enable_lora=True,
            max_lora_rank=self.max_lora_rank,
            max_loras=1,
            enforce_eager=rollout.enforce_eager,
            # The trainer scores logits / temperature; raw mode would return temperature-1 logprobs.
            logprobs_mode="processed_logprobs",
            max_model_len=max_model_len,
        )
        if self.device == "cpu":
            # vLLM's legacy env var overrides this inside vLLM; report what it will use.
            env = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "")
            gib = float(env) if env else rollout.cpu_kv_cache_gib
            kwargs["kv_cache_memory_bytes"] = int(gib * GIB) if gib else (kv_bytes or GIB // 4)
            # vLLM 0.32 CPU: a seeded request whose prompt is split across steps crashes the engine
            # ("CPU Generator does not use offset"): batches over ~4k prompt tokens did. Unsplit prompts
            # also keep each seeded sample independent of what else is in the batch.
            kwargs["enable_chunked_prefill"] = False
        else:
            kwargs["gpu_memory_utilization"] = rollout.gpu_memory_utilization
            kwargs["tensor_parallel_size"] = rollout.tensor_parallel_size
            kwargs["enable_sleep_mode"] = rollout.enable_sleep_mode
            if self.device_ids:
                kwargs["device_ids"] = self.device_ids
        self.engine_kwargs = kwargs
        return kwargs

    def _startup_hint(self, err: BaseException) -> str:
        if self.device == "cpu":
            knobs = "rollout.cpu_kv_cache_gib (or VLLM_CPU_KVCACHE_SPACE), rollout.max_model_len, dtype"
        else:
            knobs = "rollout.gpu_memory_utilization, rollout.max_model_len, rollout.tensor_parallel_size"
        return f"vLLM engine failed to start ({_short(err)}); check {knobs}, or rollout.backend = 'hf'"

    @property
    def kv_sequences(self) -> int | None:
        """How many sequences of the full context the KV cache holds at once (vLLM gives each sequence
        whole blocks and keeps one null block). Fewer than a step's rollouts: it samples in waves."""
        if self.llm is None:
            return None
        cache = self.llm.llm_engine.vllm_config.cache_config
        blocks, size = cache.num_gpu_blocks, cache.block_size
        length = self.engine_kwargs.get("max_model_len") or self.llm.llm_engine.model_config.max_model_len
        if not blocks or not size or not length:
            return None  # multi-process engine: its blocks are counted in the engine's process
        return int((blocks - 1) // -(-length // size))

    # -- sampling -------------------------------------------------------------------------------------

    def _vllm_params(self, sampling: SamplingParams, n: int, seed: int | None) -> Any:
        return self._vllm.SamplingParams(
            n=n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,  # 0 = disabled in vLLM too
            max_tokens=sampling.max_tokens,
            stop_token_ids=list(sampling.stop_token_ids),
            logprobs=0,  # 0 = just the sampled token's logprob
            seed=seed,
            skip_special_tokens=True,
        )

    def sample(self, requests: Sequence[Request], sampling: SamplingParams) -> list[Group]:
        if not requests:
            return []
        start = time.perf_counter()
        prompts = [self._vllm.TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests]
        params = [self._vllm_params(sampling, r.n, r.seed) for r in requests]
        outputs = self.llm.generate(prompts, params, lora_request=self._lora, use_tqdm=False)
        groups = [
            Group(prompt_ids=list(r.prompt_ids), completions=[self._completion(c) for c in out.outputs])
            for r, out in zip(requests, outputs, strict=True)
        ]
        self.timings["generate_s"] = time.perf_counter() - start
        return groups

    @staticmethod
    def _completion(out: Any) -> Completion:
        token_ids = list(out.token_ids)
        logprobs = [lp[tok].logprob for tok, lp in zip(token_ids, out.logprobs or [], strict=True)]
        # "stop" covers both the model's EOS and our stop_token_ids; vLLM keeps that token in token_ids.
        reason = "stop" if out.finish_reason == "stop" else "length"
        # vLLM labels each token with the weight version the engine held (set in load_adapter); the
        # oldest is the sample's staleness. Several spans would mean an adapter changed mid-request.
        spans = out.weight_versions or []
        versions = [int(s.version[1:]) for s in spans if s.version.startswith("v")]
        return Completion(token_ids, logprobs, out.text, reason, version=min(versions) if versions else None)

    def score_logprobs(self, prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
        """Temperature-1 logprob of each completion token (prompt logprobs skip the sampler)."""
        if not completion_ids:
            return []
        tokens = list(prompt_ids) + list(completion_ids)
        params = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0, detokenize=False)
        (out,) = self.llm.generate(
            [self._vllm.TokensPrompt(prompt_token_ids=tokens)],
            params,
            lora_request=self._lora,
            use_tqdm=False,
        )
        rows = out.prompt_logprobs[len(prompt_ids) :]
        return [row[tok].logprob for tok, row in zip(completion_ids, rows, strict=True)]

    # -- adapters -------------------------------------------------------------------------------------

    def load_adapter(self, path: Path | None, version: int) -> None:
        """Sample with the peft adapter at `path` from now on; None = the base model.

        The new adapter is loaded before the old one is dropped, so a failed load leaves sampling as it was.
        """
        start = time.perf_counter()
        old, new = self._lora, None
        if path is not None:
            new = self._vllm.lora.request.LoRARequest(f"adapter-v{version}", self._next_lora_id, str(path))
            self._next_lora_id += 1
            try:
                self.llm.llm_engine.add_lora(new)
            except Exception as err:
                raise RuntimeError(
                    f"vLLM could not load adapter {path} ({_short(err)}); is its rank <= "
                    f"max_lora_rank ({self.max_lora_rank}) and are its target modules supported?"
                ) from err
        self._lora, self.adapter_version = new, version if path is not None else None
        self.version = version
        self.llm.update_weight_version(f"v{version}")  # vLLM stamps it on every token sampled from now
        if old is not None:
            self.llm.llm_engine.remove_lora(old.lora_int_id)
        self.timings["adapter_load_s"] = time.perf_counter() - start

    # -- memory ---------------------------------------------------------------------------------------

    def sleep(self) -> None:
        """Free GPU memory for the trainer (no-op on CPU or without rollout.enable_sleep_mode).

        Level 1 parks the weights in host memory; level 2 would drop them, with nothing to reload from.
        """
        if self.sleep_mode:
            start = time.perf_counter()
            self.llm.sleep(level=1)
            self.timings["sleep_s"] = time.perf_counter() - start

    def wake_up(self) -> None:
        if self.sleep_mode:
            start = time.perf_counter()
            self.llm.wake_up()
            self.timings["wake_up_s"] = time.perf_counter() - start

    def close(self) -> None:
        """Shut the engine down and release its memory; a second engine can then start in this process."""
        if self.llm is None:
            return
        llm, self.llm, self._lora = self.llm, None, None
        llm.llm_engine.engine_core.shutdown()
        del llm
        self._release_distributed()

    @staticmethod
    def _release_distributed() -> None:
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()
