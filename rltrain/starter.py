"""`python -m rltrain init` and the README's config table, both generated from the config's field docs.

The docstrings under the fields of rltrain/config.py are the one place a key's meaning is written;
`STARTER` only says which keys the starter sets, and to what.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from rltrain.config import HOSTED_ONLY_KEYS, Config

# What `init` writes uncommented; every other key is written commented out with its default or example.
STARTER: dict[str, Any] = {
    "model": "builtin:tiny",
    "max_steps": 50,
    "batch_size": 32,
    "rollouts_per_example": 8,
    "learning_rate": 1e-2,
    "sampling": {"max_tokens": 32, "temperature": 1.0},
    "env": [{"id": "digits", "args": {}}],
    "checkpoints": {"interval": 10},
    "lora": {"rank": 16},
    "algorithm": {"variant": "grpo"},
    "rollout": {"backend": "auto"},
    "run": {"output_dir": "runs", "seed": 0},
    "usage": {"price_per_device_hour": 0.0},
}
HEADER = """\
# rltrain config — the shape `prime train init` writes, plus rltrain's own sections.
# Every key is checked: a misspelling is an error that names it. Commented keys show defaults.
"""
COMMENT_COLUMN = 40


def toml_value(value: Any) -> str:
    """A TOML literal for the JSON-like values a config holds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items())
        return "{" + (f" {inner} " if inner else "") + "}"
    raise TypeError(f"no TOML literal for {value!r}")


def _model_of(info: FieldInfo) -> tuple[type[BaseModel] | None, bool]:
    """(the section's model, whether it is an array of tables) for a field holding sections."""
    for t in (info.annotation, *get_args(info.annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t, False
        if get_origin(t) is list and get_args(t) and isinstance(get_args(t)[0], type):
            inner = get_args(t)[0]
            if issubclass(inner, BaseModel):
                return inner, True
    return None, False


def _default(info: FieldInfo) -> Any:
    """What a commented-out key shows: its default, else an example, else nothing (None)."""
    if info.default not in (PydanticUndefined, None):
        return info.default
    if info.default_factory is not None:
        made = info.default_factory()  # type: ignore[call-arg]
        return info.examples[0] if made in ([], {}) and info.examples else made
    return info.examples[0] if info.examples else None


def _doc(info: FieldInfo) -> str:
    """The field's docstring on one line."""
    return " ".join((info.description or "").split())


def _line(text: str, doc: str, on: bool) -> str:
    text = text if on else f"# {text}"
    return f"{text.ljust(COMMENT_COLUMN - 1)} # {doc}" if doc else text


def _fields(model: type[BaseModel], chosen: dict[str, Any], on: bool) -> Iterator[str]:
    """Plain keys first, as TOML wants them before any sub-table."""
    for key, info in model.model_fields.items():
        if _model_of(info)[0] is None and key not in HOSTED_ONLY_KEYS:
            if key in chosen:
                yield _line(f"{key} = {toml_value(chosen[key])}", _doc(info), on)
            elif _default(info) is not None:
                yield _line(f"{key} = {toml_value(_default(info))}", _doc(info), False)


def _sections(model: type[BaseModel], chosen: dict[str, Any], prefix: str) -> Iterator[str]:
    for key, info in model.model_fields.items():
        sub, array = _model_of(info)
        if sub is None:
            continue
        name = f"{prefix}{key}"
        entries = chosen.get(key) if array else [chosen.get(key, {})]
        on = key in chosen
        head = f"[[{name}]]" if array else f"[{name}]"
        for entry in entries or [{}]:
            yield ""
            yield _line(head, _doc(info), on)
            yield from _fields(sub, entry, on)
            yield from _sections(sub, entry if on else {}, f"{name}.")


def starter_config() -> str:
    """The commented starter config: every key, its meaning, the starter's values uncommented."""
    lines = [*HEADER.splitlines(), "", *_fields(Config, STARTER, True), *_sections(Config, STARTER, "")]
    return "\n".join(lines) + "\n"


def _rows(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str, str]]:
    for key, info in model.model_fields.items():
        sub, array = _model_of(info)
        name = f"{prefix}{key}"
        if sub is not None:
            yield (f"`[[{name}]]`" if array else f"`[{name}]`", "", _doc(info))
            yield from _rows(sub, f"{name}.")
            continue
        default = info.default if info.default is not PydanticUndefined else "required"
        if info.default_factory is not None:
            default = info.default_factory()  # type: ignore[call-arg]
        shown = "required" if default == "required" else toml_value(default) if default is not None else "—"
        yield (f"`{name}`", f"`{shown}`" if shown not in ("required", "—") else shown, _doc(info))


def config_table() -> str:
    """The README's config reference: every key, its default and its meaning."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    bar = "\\|"  # a pipe inside a cell would end it
    lines += [f"| {k} | {d} | {m.replace('|', bar)} |" for k, d, m in _rows(Config, "")]
    return "\n".join(lines) + "\n"


# `init --prime-rl`: prime-rl's own rl.toml shape (examples/reverse_text/rl_lora.toml), on a local model.
PRIME_RL_STARTER = """\
# prime-rl's rl.toml shape (what `uv run rl @ rl.toml` reads); rltrain maps each key to its own meaning
# and announces the ones with no local meaning (inference server, wandb, weight broadcast).
max_steps = 20
seq_len = 512                        # prompt + completion; longer prompts are dropped with a count

[model]
name = "builtin:smollm2"             # a local model dir, hub id, registry name or builtin

[orchestrator]
batch_size = 32                      # rollouts per step
rollouts_per_example = 8             # GRPO group size
max_async_level = "auto"             # steps sampling may run ahead; auto: 0 on CPU, 1 on a GPU

[orchestrator.sampling]
max_tokens = 32
temperature = 1.0

[[orchestrator.env]]
id = "reverse-text"

[trainer.optim]
lr = 1e-4
weight_decay = 0.0

[trainer.model.lora]
rank = 16
alpha = 32
dropout = 0.0
target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

[ckpt]
interval = 10
"""
