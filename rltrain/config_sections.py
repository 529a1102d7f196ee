"""The config's sections: one typed model per TOML table, each field's meaning in the docstring under
it (rltrain/starter.py turns them into `python -m rltrain init` and the README's table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rltrain.config_openenv import OpenEnvConfig


class ConfigError(ValueError):
    """A config problem, phrased as one line that names the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


class SamplingConfig(_Model):
    max_tokens: int = Field(256, gt=0)
    """Tokens sampled per completion at most."""
    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature (0 = greedy); the trainer scores logits / temperature."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p."""
    top_k: int = Field(0, ge=0)
    """Keep the k most likely tokens (0 = all)."""
    enable_thinking: bool | None = Field(None, examples=[False])
    """Chat-template switch for Qwen3.5 and Nemotron (unset = the model's registry default)."""
    reasoning_effort: Literal["low", "medium", "high"] | None = Field(None, examples=["low"])
    """Chat-template switch for gpt-oss (unset = the model's registry default)."""


class EnvConfig(_Model):
    id: str | None = Field(None, min_length=1, examples=["digits"])
    """Built-in name, installed module, Hub slug owner/name, or path/to/env.py (verifiers: the env id)."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for the module's load_environment(**args)."""
    name: str | None = Field(None, examples=["my-env"])
    """Label in metrics and records (default: the id, a file's stem, or the taskset id)."""
    ratio: float = Field(1.0, gt=0.0)
    """Share of prompts when several [[env]] train together."""
    taskset: dict[str, Any] | None = Field(None, examples=[{"id": "alphabet-sort-v1"}])
    """verifiers 0.4: the taskset ({id, ...its config}); makes this entry a verifiers environment."""
    harness: dict[str, Any] | None = Field(None, examples=[{"id": "null"}])
    """verifiers: the harness (Prime template shape; read as agent.harness). Default: null."""
    agent: dict[str, Any] | None = Field(None, examples=[{"max_turns": 4}])
    """verifiers 0.4: the agent (harness, runtime, max_turns, sampling); runtime defaults to subprocess."""
    verifiers: dict[str, Any] = Field(default_factory=dict)
    """verifiers 0.4: any other env-config key (timeout, retries, interception, ...)."""
    renderer: str | dict[str, Any] | None = Field(None, examples=["qwen3"])
    """verifiers: how its client renders chat to tokens (unset = its auto choice; `qwen3` for tools)."""
    allow_bash: bool = False
    """verifiers: let harnesses other than null (bash, mini-swe-agent...) run model commands here."""
    path: str | None = Field(None, examples=["environments/my_tasksets"])
    """A directory put on the import path of the run and its subprocesses (relative: to the cwd)."""
    python: str | None = Field(None, examples=["~/.cache/rltrain/venvs/my-env-1a2b/bin/python"])
    """The interpreter of the environment's own venv (`envs venv` prints it): its rows, rewards,
    env_response and tools run in worker processes of that interpreter (classic verifiers 0.1.x)."""
    openenv: OpenEnvConfig | None = None
    """An OpenEnv server: `{url = ...}` (running) or `{path = ..., python = ...}` (started by the run)."""

    @model_validator(mode="after")
    def _one_kind(self) -> EnvConfig:
        if self.id is None and self.taskset is None and self.openenv is None:
            raise ValueError(
                "an [[env]] entry needs an id (or a verifiers taskset = {id = ...}, or openenv = {...})"
            )
        if self.taskset is not None and not isinstance(self.taskset.get("id"), str):
            raise ValueError("taskset needs an id (the taskset's module, e.g. alphabet-sort-v1)")
        if self.openenv is not None and (self.id is not None or self.taskset is not None):
            raise ValueError("an [[env]] entry is an openenv server, or has an id or a taskset: not both")
        if self.python is not None and self.openenv is not None:
            raise ValueError("python: an OpenEnv server's interpreter goes in openenv = {path, python}")
        if self.python is not None and self.taskset is not None:
            raise ValueError(
                "python: a verifiers 0.4 taskset runs in the trainer's venv (python is for 0.1.x)"
            )
        return self

    @property
    def label(self) -> str:
        """The environment's name in metrics and records: `name`, else a file's stem, else the id."""
        if self.name:
            return self.name
        if self.openenv is not None:
            return self.openenv.label
        if self.taskset is not None and self.id is None:
            return str(self.taskset["id"])
        assert self.id is not None
        return Path(self.id).stem if self.id.endswith(".py") else self.id

    def verifiers_config(self) -> dict[str, Any]:
        """The verifiers env config this entry describes (rltrain's own keys left out)."""
        raw: dict[str, Any] = {**self.verifiers, "taskset": self.taskset}
        for key in ("harness", "agent"):
            if getattr(self, key) is not None:
                raw[key] = getattr(self, key)
        if self.id is not None:
            raw["id"] = self.id
        return raw


class EvalEnvConfig(EnvConfig):
    num_examples: int | None = Field(None, ge=-1, examples=[16])
    """Held-out rows of this environment (-1 = all; unset = [eval] num_examples)."""
    rollouts_per_example: int | None = Field(None, gt=0, examples=[4])
    """Completions per row for this environment (unset = [eval] rollouts_per_example)."""


class EvalConfig(_Model):
    interval: int = Field(0, ge=0)
    """Steps between held-out evals (0 = never during training)."""
    num_examples: int = Field(32, ge=-1)
    """Held-out rows per environment (-1 = all of them)."""
    rollouts_per_example: int = Field(1, gt=0)
    """Completions per row: the k of avg@k and pass@k."""
    skip_first_step: bool = False
    """Skip the eval of the base model before the first step (a step-0 row in metrics.jsonl)."""
    eval_base_model: bool | None = None
    """Older hosted key: read as skip_first_step with the inverted meaning, with a notice."""
    env: list[EvalEnvConfig] = Field(default_factory=list)
    """Environments to evaluate, each with its own sizes (default: the training envs' held-out rows)."""

    @model_validator(mode="after")
    def _translate_base_model(self) -> EvalConfig:
        if self.eval_base_model is not None:  # as prime's CLI translates it (and announces it)
            self.__dict__["skip_first_step"] = not self.eval_base_model
        return self


class ValConfig(_Model):
    interval: int = Field(0, ge=0)
    """Steps between validation passes (0 = never)."""
    num_examples: int = Field(16, gt=0)
    """Held-out rows per environment."""
    rollouts_per_example: int = Field(1, gt=0)
    """Completions per row."""


class PreBatchFilter(_Model):
    type: Literal["zero_advantage"] = Field(examples=["zero_advantage"])
    """`zero_advantage`: drop groups whose rewards are all equal (no learning signal)."""
    enforce: bool | None = Field(None, examples=[True])
    """Hosted key (drop flagged rollouts before they fill a batch slot): rltrain always drops them."""


class CheckpointConfig(_Model):
    interval: int = Field(0, ge=0)
    """Steps between checkpoints (0 = only at the end)."""
    keep_last: int | None = Field(None, gt=0, examples=[3])
    """Keep only the newest N checkpoints (unset = keep all)."""
    keep_best: str | None = Field(None, examples=["eval/digits/avg@4"])
    """Also keep the checkpoint whose eval of this metric at its step has the highest lower bound of
    its 95% interval (an eval/<env>/avg@k or pass@k key)."""
    keep_cloud: int | None = Field(None, examples=[2])
    """Hosted only: accepted with a notice and ignored."""


class AdapterConfig(_Model):
    interval: int = Field(0, ge=0)
    """Steps between standalone adapter copies in runs/ID/adapters/step_N (0 = off)."""
    keep_last: int | None = Field(None, gt=0, examples=[3])
    """Keep only the newest N adapter copies (unset = keep all)."""


class LoraConfig(_Model):
    rank: int = Field(16, gt=0)
    """LoRA rank."""
    alpha: int | None = Field(None, gt=0, examples=[32])
    """LoRA scaling numerator; overrides the top-level lora_alpha (default 2 x rank)."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA input."""
    target_modules: list[str] | str | None = Field(None, examples=[["q_proj", "v_proj"]])
    """Modules that get an adapter (unset = the model family's projections; see `rltrain models`)."""
    target_parameters: list[str] | None = Field(None, examples=[["experts.gate_up_proj"]])
    """Fused MoE expert weights that get an adapter (unset = the family's default)."""


class MismatchConfig(_Model):
    """How far the trainer trusts a sample whose sampler μ differs from the update's starting policy
    π_prox (a stale adapter, another engine): the constant weight w on its gradient."""

    mode: Literal["token", "sequence", "none"] = "token"
    """token: w = min(π_prox/μ, cap) per token; sequence: w = the sequence's geometric-mean ratio,
    0 (dropped) where it leaves [1/cap, cap]; none: w = 1."""
    cap: float = Field(2.0, gt=0.0)
    """The bound on the importance weight π_prox/μ (see mode)."""


class AlgorithmConfig(_Model):
    variant: Literal["grpo", "dr_grpo", "dapo", "gspo", "cispo"] = "grpo"
    """Loss: grpo (sequence mean), dr_grpo (no length bias), dapo (token-level, clip-higher), gspo
    (sequence-level ratio), cispo (clipped stop-gradient weight x advantage x logprob)."""
    scale_rewards: bool = True
    """Divide advantages by the group's reward std (dr_grpo: false)."""
    clip_eps_low: float | None = Field(None, ge=0.0, examples=[0.2])
    """Trust region: lower clip of the ratio to the update's starting policy, 1 - eps_low (unset = 0.2;
    gspo 3e-4; cispo 1.0)."""
    clip_eps_high: float | None = Field(None, ge=0.0, examples=[0.28])
    """Upper clip: 1 + eps_high (unset = clip_eps_low; dapo 0.28; gspo 4e-4; cispo 4.0)."""
    kl_coef: float = Field(0.0, ge=0.0)
    """Weight of the k3 KL to the base model (adapter disabled); 0 = off."""
    mismatch: MismatchConfig = Field(default_factory=MismatchConfig)
    """Importance weight for stale and engine-mismatched samples."""
    max_grad_norm: float = Field(1.0, gt=0.0)
    """Clip the LoRA gradient to this norm."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's beta1 and beta2."""
    warmup_steps: int = Field(0, ge=0)
    """Linear learning-rate warmup steps."""
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    """Learning-rate schedule after warmup."""
    micro_batch_size: int = Field(8, gt=0)
    """Sequences per forward/backward; gradients accumulate over micro-batches."""
    pack_tokens: int = Field(1024, ge=0)
    """Trainer rows: each prompt once with its completions after it, packed up to this many tokens
    without padding (same gradients); 0 = one padded row per sample. Full-attention families only."""
    max_nonfinite_skips: int = Field(3, gt=0)
    """Consecutive skipped (non-finite) updates before the run fails."""


class RolloutConfig(_Model):
    backend: Literal["auto", "vllm", "hf"] = "auto"
    """Sampling engine: auto (vllm on GPU when installed; hf on CPU, where it samples faster), vllm, or hf."""
    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=1.0)
    """GPU: share of the device's memory vLLM may take."""
    tensor_parallel_size: int = Field(1, gt=0)
    """GPU: shard one vLLM engine over this many GPUs (one process only)."""
    devices: list[int] | None = Field(None, examples=[[4, 5, 6, 7]])
    """GPU, split placement: the CUDA devices the engines run on, rank r's engine on the r-th slice of
    tensor_parallel_size (unset = colocated: each engine on its rank's own GPU)."""
    max_model_len: int | None = Field(None, gt=0, examples=[4096])
    """The engine's context (unset = the longest prompt plus the completion or episode budget, capped by
    the model's own)."""
    enforce_eager: bool = False
    """vLLM: no CUDA graphs (slower, starts faster)."""
    enable_sleep_mode: bool = False
    """GPU: vLLM frees its memory while the trainer works."""
    lean_decoder: bool = True
    """hf backend: the fused fast path for Llama/Qwen3 (false = transformers' own forward)."""
    cpu_kv_cache_gib: float | None = Field(None, gt=0.0, examples=[0.25])
    """CPU: vLLM's KV cache in GiB (unset = sized for the in-flight sequences; VLLM_CPU_KVCACHE_SPACE wins)"""
    landed_check_interval: int = Field(10, ge=0)
    """Steps between checks that the engine applies the adapter (the first sync is always checked)."""
    landed_check_tolerance: float | None = Field(None, gt=0.0, examples=[0.001])
    """A fixed bound on the landed check's mean |logprob| difference (unset: 4x the engine/trainer noise
    floor measured at start; docs/vllm.md)."""


class ScoringConfig(_Model):
    """How environment code runs: reward functions, env_response and tools, in worker processes."""

    timeout_s: float = Field(60.0, gt=0.0)
    """Seconds a reward call may take before it scores error_reward (its worker is killed)."""
    error_reward: float = 0.0
    """The reward of a completion whose scoring raised, hung, crashed or gave NaN, or whose episode failed."""
    workers: int | None = Field(None, gt=0, examples=[8])
    """Worker processes running environment code at once (unset = the CPU count, 2 to 8)."""
    memory_limit_mb: int = Field(4096, ge=0)
    """Address-space limit per worker process; a call past it fails, its worker is replaced (0 = none)."""
    turn_timeout_s: float = Field(60.0, gt=0.0)
    """Seconds one env_response or tool call may take (a tool's timeout becomes an error message)."""
    episode_timeout_s: float = Field(600.0, gt=0.0)
    """Seconds a multi-turn episode may take after its first turn (past it: recorded, not trained on)."""
    max_env_chars: int = Field(8192, ge=64)
    """Characters kept of one tool result or environment message; the rest is cut, with a marker."""


class RunConfig(_Model):
    output_dir: str = "runs"
    """Where run directories are created."""
    id: str | None = Field(None, examples=["my-run"])
    """Run id and directory name (unset = timestamp + random suffix)."""
    team_id: str | None = Field(None, examples=["my-team"])
    """Written to the record's team_id."""
    seed: int = 0
    """Seeds the LoRA init, the prompt order and sampling."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Model dtype (auto = bf16 on GPU, fp32 on CPU)."""
    device: str = "auto"
    """Trainer device (auto = cuda when available)."""
    tensorboard: bool = True
    """Write TensorBoard scalars to runs/ID/tensorboard."""
    progress: bool = True
    """Show a progress bar."""


class FsdpConfig(_Model):
    """Shard the trainer's model over the ranks (torch FSDP2) for models too large for one device."""

    enabled: bool = False
    """Shard the trainer over the ranks (accelerate launch with several processes)."""
    reshard_after_forward: bool = True
    """false: keep layers gathered from forward to backward (faster, more memory)."""
    cpu_offload: bool = False
    """Shards and optimizer state in host memory (GPU only)."""


class UsageConfig(_Model):
    price_per_device_hour: float = Field(0.0, ge=0.0)
    """cost_usd = device-hours x this."""


class WandbConfig(_Model):
    """Weights & Biases logging (the `wandb` package: `pip install 'rltrain[wandb]'`), from the main rank."""

    project: str = Field("rltrain", min_length=1)
    """W&B project (prime's key)."""
    name: str | None = Field(None, examples=["digits-lr1e-2"])
    """W&B run name (prime's key; unset = the run id)."""
    entity: str | None = Field(None, examples=["my-team"])
    """W&B entity: user or team (prime's key; unset = your default)."""
    tags: list[str] = Field(default_factory=list, examples=[["grpo", "tiny"]])
    """W&B run tags."""
    offline: bool = False
    """Write the W&B run to runs/ID/wandb only (`wandb sync` uploads it later); WANDB_MODE also works."""
    rollout_interval: int = Field(10, ge=0)
    """Log a table of sample rollouts every N steps (0 = never)."""
    rollout_rows: int = Field(16, gt=0)
    """Rollouts per logged table at most."""
