"""Typed run configuration: the shape `prime train init` writes, plus rltrain's own sections.

Every model forbids unknown keys, so a misspelling is an error that names the field. Keys that the
hosted service understands but that mean nothing on one machine are accepted and announced once.
Each field's meaning is the docstring under it: `python -m rltrain init` and the README's config
table are generated from them (rltrain/starter.py).
"""

from __future__ import annotations

import difflib
import logging
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from rltrain.config_sections import (  # noqa: F401  (re-exported: the config's public names)
    AdapterConfig,
    AlgorithmConfig,
    CheckpointConfig,
    ConfigError,
    EnvConfig,
    EvalConfig,
    EvalEnvConfig,
    FsdpConfig,
    LoraConfig,
    MismatchConfig,
    PreBatchFilter,
    RolloutConfig,
    RunConfig,
    SamplingConfig,
    ScoringConfig,
    UsageConfig,
    ValConfig,
    WandbConfig,
    _Model,
)
from rltrain.guards.config import GuardConfig

# Hosted-training keys with no local meaning: accepted, announced, ignored.
HOSTED_ONLY_KEYS = (
    "oversampling_factor",
    "trajectory_strategy",
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
    guards: list[GuardConfig] = Field(default_factory=list)
    """Signs of a run going wrong, and what to do (each entry replaces its signal's warn-only default)."""
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
    max_async_level: int | Literal["auto"] = "auto"
    """Rollouts used at step n were sampled with an adapter no older than step n - max_async_level
    (prime's meaning): sampling runs that far ahead of training. 0 = serial. auto: 0 when the trainer
    is on CPU (the engine shares its cores: sampling ahead did not pay there), else 1; the run logs
    its choice and writes it to config.json."""
    trajectory_strategy: str | None = None
    """Hosted only: accepted with a notice and ignored."""
    wandb: WandbConfig | None = None
    """Log the run to Weights & Biases (metrics, config, status, rollouts)."""
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

    @field_validator("max_async_level", mode="before")
    @classmethod
    def _level(cls, v: Any) -> Any:
        if v != "auto" and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise ValueError(f'a whole number of steps >= 0, or "auto"; got {v!r}')
        return v

    @model_validator(mode="after")
    def _batch_divides(self) -> Config:
        if self.batch_size % self.rollouts_per_example:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of rollouts_per_example "
                f"({self.rollouts_per_example})"
            )
        return self

    @model_validator(mode="after")
    def _best_and_rollback_can_work(self) -> Config:
        key = self.checkpoints.keep_best
        if key is not None and {"eval": self.eval, "val": self.val}.get(key.split("/", 1)[0]) is None:
            raise ValueError(f"checkpoints.keep_best = {key!r}: name an eval/<env>/avg@k key of an [eval]")
        if self.fsdp.enabled and any(g.action == "rollback" for g in self.guards):
            raise ValueError("guards: action = 'rollback' does not work with [fsdp] enabled yet (use stop)")
        return self

    @property
    def prompts_per_step(self) -> int:
        return self.batch_size // self.rollouts_per_example

    @property
    def async_level(self) -> int:
        """max_async_level, settled (`settle_auto`)."""
        if self.max_async_level == "auto":
            raise RuntimeError("max_async_level 'auto' is settled at the run's start (config.settle_auto)")
        return self.max_async_level

    @property
    def effective_lora_alpha(self) -> int:
        return self.lora.alpha or self.lora_alpha or 2 * self.lora.rank

    def notices(self) -> list[str]:
        """One line per key read with another meaning than its name says."""
        out = []
        if self.eval is not None and self.eval.eval_base_model is not None:
            skip = str(self.eval.skip_first_step).lower()
            out.append(f"[eval] eval_base_model is deprecated: translating to skip_first_step = {skip}")
        best, every = self.checkpoints.keep_best, self.checkpoints.interval
        section = self.val if best and best.startswith("val/") else self.eval
        if best and section and (not section.interval or not every or every % section.interval):
            out.append("checkpoints.keep_best: no checkpoint has an eval at its step; only keep_last applies")
        return out

    def hosted_only_keys_set(self) -> list[str]:
        keys = [k for k in HOSTED_ONLY_KEYS if getattr(self, k) is not None]
        if self.checkpoints.keep_cloud is not None:
            keys.append("checkpoints.keep_cloud")
        return keys


def settle_auto(cfg: Config, device_type: str, announce: bool = True) -> Config:
    """The config with its "auto" values chosen for the trainer's device, each choice logged once.
    max_async_level: serial on CPU, where the engine shares the trainer's cores and a stale batch's
    extra steps of learning bought no wall time; one step ahead on a GPU (docs/benchmarks.md)."""
    if cfg.max_async_level != "auto":
        return cfg
    level, why = (0, "the trainer is on CPU, where the engine shares its cores")
    if device_type != "cpu":
        level, why = (1, f"the trainer is on {device_type}: sampling one step ahead of training")
    if announce:
        logging.getLogger("rltrain").info("notice: max_async_level auto -> %d (%s)", level, why)
    return cfg.model_copy(update={"max_async_level": level})


def _model_in(tp: Any) -> type[BaseModel] | None:
    """The config section a field's type holds (through `X | None` and `list[X]`)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    return next((m for m in map(_model_in, get_args(tp)) if m is not None), None)


def _field_type(loc: tuple[Any, ...]) -> Any:
    """The declared type at `loc` (None: not a known field)."""
    model: type[BaseModel] | None = Config
    tp: Any = None
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part)) if model is not None else None
        if field is None:
            return None
        tp = field.annotation
        model = _model_in(tp)
    return tp


def _describe(value: Any) -> str:
    return "a section" if isinstance(value, dict) else f"{value!r}"


def _message(e: Any) -> str:
    """One pydantic error as the user's mistake."""
    loc, given = tuple(e["loc"]), e.get("input")
    if e["type"] == "extra_forbidden":
        parent = _field_type(loc[:-1]) if len(loc) > 1 else Config
        model = _model_in(parent)
        guess = difflib.get_close_matches(str(loc[-1]), list(model.model_fields) if model else [], n=1)
        hint = f"did you mean {guess[0]}?" if guess else "see `python -m rltrain init` for every key"
        return f"unknown key — {hint}"
    if e["type"] == "missing":
        return "required key is missing"
    message = str(e["msg"]).removeprefix("Value error, ")
    if e["type"] == "value_error":  # a validator's own sentence
        return message
    tp = _field_type(loc)
    section = _model_in(tp)
    item = bool(loc) and isinstance(loc[-1], int)  # an entry of a list such as [[env]]
    name = str(loc[-2] if item else loc[-1]) if loc else "config"
    if section is not None and not item and get_origin(tp) is list and not isinstance(given, list):
        return f"must be a list of sections ([[{name}]] tables), got {_describe(given)}"
    if section is not None and e["type"] in ("model_type", "dict_type", "model_attributes_type"):
        table = (
            f"a [[{name}]] table" if item else f"a section ([{'.'.join(map(str, loc))}] or {name} = {{...}})"
        )
        return f"must be {table}, got {_describe(given)}"
    if isinstance(given, dict) and section is None:
        return f"must be a value, not a section ({message})"
    return message


def _format_error(err: ValidationError) -> str:
    """The first error as one line, unknown keys first: a misspelt key also shows up as a missing one,
    and the typo is what the user has to fix."""
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    if first["type"] == "extra_forbidden":  # the key it was meant to be is missing only because of it
        meant = _message(first).removeprefix("unknown key — did you mean ").removesuffix("?")
        target = (*first["loc"][:-1], meant)
        errors = [e for e in errors if not (e["type"] == "missing" and tuple(e["loc"]) == target)]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"config error: {loc}: {_message(first)}{more}"


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
        if not all(parts):
            raise ConfigError(f"config error: override --{key}: not a key (overrides look like --a.b value)")
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
    if not p.exists():
        raise ConfigError(f"config error: {p}: no such file")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        where = f"byte 0x{err.object[err.start]:02x} at offset {err.start}"
        raise ConfigError(f"config error: {p}: not a UTF-8 text file ({where}); a config is TOML") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config error: {p}: invalid TOML: {err}") from None
    except OSError as err:  # a directory, no permission
        raise ConfigError(f"config error: {p}: cannot read: {err.strerror or err}") from None
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
