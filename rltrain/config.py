"""Typed run configuration: the shape `prime train init` writes, plus rltrain's own sections.

Every model forbids unknown keys, so a misspelling is an error that names the field. Keys that the
hosted service understands but that mean nothing on one machine are accepted and announced once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A config problem, phrased as one line that names the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SamplingConfig(_Model):
    max_tokens: int = Field(256, gt=0)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    enable_thinking: bool | None = None  # passed to the chat template (Qwen3.5, Nemotron)
    reasoning_effort: Literal["low", "medium", "high"] | None = None  # gpt-oss chat template


class EnvConfig(_Model):
    id: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None  # label in metrics; defaults to the id
    ratio: float = Field(1.0, gt=0.0)  # share of prompts when several [[env]] train together


class EvalConfig(_Model):
    interval: int = Field(0, ge=0)  # steps between evals; 0 = only when asked
    num_examples: int = Field(32, gt=0)
    rollouts_per_example: int = Field(1, gt=0)
    eval_base_model: bool = False  # hosted-config key: evaluate step 0 (before training)
    env: list[EnvConfig] = Field(default_factory=list)  # defaults to the training envs' held-out rows


class ValConfig(_Model):
    interval: int = Field(0, ge=0)
    num_examples: int = Field(16, gt=0)
    rollouts_per_example: int = Field(1, gt=0)


class PreBatchFilter(_Model):
    type: Literal["zero_advantage"]


class CheckpointConfig(_Model):
    interval: int = Field(0, ge=0)  # 0 = only at the end
    keep_last: int | None = Field(None, gt=0)  # None = keep every checkpoint
    keep_cloud: int | None = None  # hosted only: accepted with a notice


class AdapterConfig(_Model):
    interval: int = Field(0, ge=0)  # export a standalone adapter every N steps; 0 = off
    keep_last: int | None = Field(None, gt=0)


class LoraConfig(_Model):
    rank: int = Field(16, gt=0)
    alpha: int | None = Field(None, gt=0)  # overrides top-level lora_alpha
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | str | None = None  # None = the model family's default
    target_parameters: list[str] | None = None  # fused MoE expert weights


class MismatchConfig(_Model):
    """Truncated importance sampling between trainer and inference logprobs."""

    mode: Literal["token", "sequence", "none"] = "token"
    cap: float = Field(2.0, gt=0.0)  # token: weights are min(ratio, cap); sequence: drop seqs beyond it


class AlgorithmConfig(_Model):
    variant: Literal["grpo", "dr_grpo", "dapo"] = "grpo"
    scale_rewards: bool = True  # divide advantages by the group's reward std
    clip_eps_low: float = Field(0.2, ge=0.0)
    clip_eps_high: float | None = Field(None, ge=0.0)  # None = clip_eps_low (dapo defaults to 0.28)
    kl_coef: float = Field(0.0, ge=0.0)  # k3 KL to the base model (adapter disabled)
    mismatch: MismatchConfig = Field(default_factory=MismatchConfig)
    max_grad_norm: float = Field(1.0, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_steps: int = Field(0, ge=0)
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    micro_batch_size: int = Field(8, gt=0)  # sequences per forward/backward; gradients accumulate
    max_nonfinite_skips: int = Field(3, gt=0)  # consecutive skipped updates before the run fails

    @property
    def eps_high(self) -> float:
        if self.clip_eps_high is not None:
            return self.clip_eps_high
        return 0.28 if self.variant == "dapo" else self.clip_eps_low


class RolloutConfig(_Model):
    backend: Literal["auto", "vllm", "hf"] = "auto"
    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=1.0)
    tensor_parallel_size: int = Field(1, gt=0)
    max_model_len: int | None = Field(None, gt=0)
    enforce_eager: bool = False
    enable_sleep_mode: bool = False
    lean_decoder: bool = True  # hf backend: the fused fast path for Llama/Qwen3 (off = transformers forward)
    cpu_kv_cache_gib: float = Field(0.25, gt=0.0)
    landed_check_interval: int = Field(10, ge=0)  # steps between landed checks; first sync always
    landed_check_tolerance: float | None = Field(None, gt=0.0)  # None = by dtype (fp32 1e-3, bf16 .05)


class ScoringConfig(_Model):
    """How reward functions run: each call in a worker thread, with a timeout."""

    timeout_s: float = Field(60.0, gt=0.0)
    error_reward: float = 0.0  # the reward of a completion whose scoring raised, hung or gave NaN
    workers: int = Field(8, gt=0)


class RunConfig(_Model):
    output_dir: str = "runs"
    id: str | None = None
    team_id: str | None = None
    seed: int = 0
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"  # "auto" = cuda when available
    tensorboard: bool = True
    progress: bool = True


class FsdpConfig(_Model):
    """Shard the trainer's model over the ranks (torch FSDP2) for models too large for one device."""

    enabled: bool = False
    reshard_after_forward: bool = True  # False: keep layers gathered between forward and backward
    cpu_offload: bool = False  # shards and optimizer state in host memory (GPU only)


class UsageConfig(_Model):
    price_per_device_hour: float = Field(0.0, ge=0.0)


# Hosted-training keys with no local meaning: accepted, announced, ignored.
HOSTED_ONLY_KEYS = ("oversampling_factor", "max_async_level", "trajectory_strategy", "wandb", "name")


class Config(_Model):
    model: str = Field(min_length=1)
    loss: Literal["rl", "sft"] = "rl"
    max_steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    rollouts_per_example: int = Field(gt=0)
    learning_rate: float = Field(1e-4, gt=0.0)
    lora_alpha: int | None = Field(None, gt=0)
    max_inflight_rollouts: int | None = Field(None, gt=0)
    env_files: list[str] = Field(default_factory=list)
    checkpoint_id: str | None = None
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    env: list[EnvConfig] = Field(min_length=1)
    eval: EvalConfig | None = None
    val: ValConfig | None = None
    pre_batch_filters: list[PreBatchFilter] = Field(default_factory=list)
    checkpoints: CheckpointConfig = Field(default_factory=CheckpointConfig)
    adapters: AdapterConfig = Field(default_factory=AdapterConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    fsdp: FsdpConfig = Field(default_factory=FsdpConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    usage: UsageConfig = Field(default_factory=UsageConfig)
    # Hosted-only keys (see HOSTED_ONLY_KEYS); typed loosely because they are never used.
    oversampling_factor: float | None = None
    max_async_level: int | None = None
    trajectory_strategy: str | None = None
    wandb: dict[str, Any] | None = None
    name: str | None = None

    @field_validator("loss")
    @classmethod
    def _rl_only(cls, v: str) -> str:
        if v != "rl":
            raise ValueError("only 'rl' is supported by rltrain (sft is not implemented)")
        return v

    @model_validator(mode="after")
    def _batch_divides(self) -> Config:
        if self.batch_size % self.rollouts_per_example:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of rollouts_per_example "
                f"({self.rollouts_per_example})"
            )
        return self

    @property
    def prompts_per_step(self) -> int:
        return self.batch_size // self.rollouts_per_example

    @property
    def effective_lora_alpha(self) -> int:
        return self.lora.alpha or self.lora_alpha or 2 * self.lora.rank

    def hosted_only_keys_set(self) -> list[str]:
        keys = [k for k in HOSTED_ONLY_KEYS if getattr(self, k) is not None]
        if self.checkpoints.keep_cloud is not None:
            keys.append("checkpoints.keep_cloud")
        return keys


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see `python -m rltrain init` for the reference)"
    elif first["type"] == "missing":
        msg = "required key is missing"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"config error: {loc}: {msg}{more}"


def _parse_value(raw: str) -> Any:
    """A command-line override value, read as TOML when it parses (numbers, booleans, lists)."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `--a.b value` / `--a.b=value` pairs to the raw config dict."""
    i = 0
    while i < len(overrides):
        arg = overrides[i]
        if not arg.startswith("--"):
            raise ConfigError(f"config error: unexpected argument {arg!r} (overrides look like --key value)")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(overrides):
                raise ConfigError(f"config error: override --{key} needs a value")
            value = overrides[i + 1]
            i += 1
        i += 1
        node = data
        parts = key.replace("-", "_").split(".")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"config error: {key}: {part} is not a section")
            node = nxt
        node[parts[-1]] = _parse_value(value)
    return data


def parse_config(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config error: {p}: no such file")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config error: {p}: invalid TOML: {err}") from None
    if "env_file" in data and "env_files" not in data:  # the hosted docs spell it both ways
        data["env_files"] = data.pop("env_file")
    return parse_config(apply_overrides(data, list(overrides or [])))
