"""Typed run configuration: the shape `prime train init` writes, plus rltrain's own sections.

Every model forbids unknown keys, so a misspelling is an error that names the field. Keys that the
hosted service understands but that mean nothing on one machine are accepted and announced once.
Each field's meaning is the docstring under it: `python -m rltrain init` and the README's config
table are generated from them (rltrain/starter.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


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
    """verifiers: allow the bash harness, which runs the model's shell commands on this machine."""
    path: str | None = Field(None, examples=["environments/my_tasksets"])
    """A directory put on the import path of the run and its subprocesses (relative: to the cwd)."""

    @model_validator(mode="after")
    def _one_kind(self) -> EnvConfig:
        if self.id is None and self.taskset is None:
            raise ValueError("an [[env]] entry needs an id (or a verifiers taskset = {id = ...})")
        if self.taskset is not None and not isinstance(self.taskset.get("id"), str):
            raise ValueError("taskset needs an id (the taskset's module, e.g. alphabet-sort-v1)")
        return self

    @property
    def label(self) -> str:
        """The environment's name in metrics and records: `name`, else a file's stem, else the id."""
        if self.name:
            return self.name
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
    """Truncated importance sampling between trainer and inference logprobs."""

    mode: Literal["token", "sequence", "none"] = "token"
    """Correct trainer/inference mismatch per token (truncated weights), per sequence (drop), or not."""
    cap: float = Field(2.0, gt=0.0)
    """token: weights are min(ratio, cap); sequence: drop sequences whose ratio leaves [1/cap, cap]."""


class AlgorithmConfig(_Model):
    variant: Literal["grpo", "dr_grpo", "dapo"] = "grpo"
    """Loss: grpo (sequence mean), dr_grpo (no length bias), dapo (token-level, clip-higher)."""
    scale_rewards: bool = True
    """Divide advantages by the group's reward std (dr_grpo: false)."""
    clip_eps_low: float = Field(0.2, ge=0.0)
    """Lower clip of the policy ratio: 1 - eps_low."""
    clip_eps_high: float | None = Field(None, ge=0.0, examples=[0.28])
    """Upper clip of the policy ratio: 1 + eps_high (unset = clip_eps_low; dapo 0.28)."""
    kl_coef: float = Field(0.0, ge=0.0)
    """Weight of the k3 KL to the base model (adapter disabled); 0 = off."""
    mismatch: MismatchConfig = Field(default_factory=MismatchConfig)
    """Trainer/inference importance correction."""
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
    max_nonfinite_skips: int = Field(3, gt=0)
    """Consecutive skipped (non-finite) updates before the run fails."""

    @property
    def eps_high(self) -> float:
        if self.clip_eps_high is not None:
            return self.clip_eps_high
        return 0.28 if self.variant == "dapo" else self.clip_eps_low


class RolloutConfig(_Model):
    backend: Literal["auto", "vllm", "hf"] = "auto"
    """Sampling engine: auto (vllm when installed), vllm, or hf (transformers)."""
    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=1.0)
    """GPU: share of the device's memory vLLM may take."""
    tensor_parallel_size: int = Field(1, gt=0)
    """GPU: shard one vLLM engine over this many GPUs (one process only)."""
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
    """Mean |logprob| difference allowed by the landed check (unset = 1e-3 fp32, 0.05 bf16)."""


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
    """Seconds a multi-turn episode may take after its first turn before it scores error_reward."""


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


# Hosted-training keys with no local meaning: accepted, announced, ignored.
HOSTED_ONLY_KEYS = (
    "oversampling_factor",
    "max_async_level",
    "trajectory_strategy",
    "wandb",
    "name",
    "buffer",
)


class Config(_Model):
    model: str = Field(min_length=1)
    """Registry name (`rltrain models`), hub id, local directory, or builtin:tiny[-FAMILY]."""
    loss: Literal["rl", "sft"] = "rl"
    """Only "rl" is supported."""
    max_steps: int = Field(gt=0)
    """Optimizer steps in the run."""
    batch_size: int = Field(gt=0)
    """Rollouts per step (= prompts per step x rollouts_per_example)."""
    rollouts_per_example: int = Field(gt=0)
    """GRPO group size: completions sampled per prompt."""
    learning_rate: float = Field(1e-4, gt=0.0)
    """AdamW learning rate of the LoRA weights (~1e-2 for the tiny model, ~1e-5..1e-4 real models)."""
    lora_alpha: int | None = Field(None, gt=0, examples=[32])
    """LoRA scaling (default 2 x rank; [lora] alpha wins)."""
    max_inflight_rollouts: int | None = Field(None, gt=0, examples=[64])
    """Cap on sequences sampled at once (groups are never split)."""
    seq_len: int | None = Field(None, gt=0, examples=[2048])
    """prime-rl's: prompt + completion at most; longer prompts are dropped from the data, with a count."""
    env_files: list[str] = Field(default_factory=list, examples=[["secrets.env"]])
    """KEY=VALUE files loaded into the process for the environment's code; never recorded."""
    checkpoint_id: str | None = Field(None, examples=["runs/ID/checkpoints/step_50"])
    """Warm start: a local checkpoint dir whose adapter initialises training."""
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    """How completions are sampled."""
    env: list[EnvConfig] = Field(min_length=1)
    """The environments to train on."""
    eval: EvalConfig | None = None
    """Held-out avg@k / pass@k per environment during training."""
    val: ValConfig | None = None
    """Validation passes on held-out rows."""
    pre_batch_filters: list[PreBatchFilter] = Field(default_factory=list)
    """Filters applied to each step's groups before training."""
    checkpoints: CheckpointConfig = Field(default_factory=CheckpointConfig)
    """Resumable checkpoints (adapter, optimizer, data position)."""
    adapters: AdapterConfig = Field(default_factory=AdapterConfig)
    """Standalone adapter copies."""
    lora: LoraConfig = Field(default_factory=LoraConfig)
    """The LoRA adapter."""
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    """The loss and the optimizer step."""
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    """The sampling engine."""
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    """How reward functions run."""
    fsdp: FsdpConfig = Field(default_factory=FsdpConfig)
    """Sharded training over several processes."""
    run: RunConfig = Field(default_factory=RunConfig)
    """Where and how the run is written."""
    usage: UsageConfig = Field(default_factory=UsageConfig)
    """Cost accounting."""
    oversampling_factor: float | None = None
    """Hosted only: accepted with a notice and ignored."""
    max_async_level: int | None = None
    """Hosted only: accepted with a notice and ignored."""
    trajectory_strategy: str | None = None
    """Hosted only: accepted with a notice and ignored."""
    wandb: dict[str, Any] | None = None
    """Hosted only: accepted with a notice and ignored."""
    buffer: dict[str, Any] | None = None
    """Older hosted difficulty buffer: accepted with a notice, ignored ([[pre_batch_filters]] replaces it)."""
    name: str | None = None
    """Hosted only: accepted with a notice and ignored."""

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

    def notices(self) -> list[str]:
        """One line per key read with another meaning than its name says."""
        out = []
        if self.eval is not None and self.eval.eval_base_model is not None:
            skip = str(self.eval.skip_first_step).lower()
            out.append(f"[eval] eval_base_model is deprecated: translating to skip_first_step = {skip}")
        return out

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
    from rltrain import prime_rl

    if prime_rl.is_prime_rl(data):  # prime-rl's own rl.toml: mapped key by key
        try:
            data, notices = prime_rl.translate(data)
        except ValueError as err:
            raise ConfigError(f"config error: {err}") from None
        for line in notices:
            logging.getLogger("rltrain").info("notice: prime-rl %s", line)
    return parse_config(apply_overrides(data, list(overrides or [])))
