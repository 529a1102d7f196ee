"""Base-model registry (the spec's list) and model-name resolution.

`model` in a config may be a registry name, a hub id, a local directory, or `builtin:tiny[-FAMILY]`
(the tiny local model, built on first use — nothing can be downloaded on this project's machines).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DENSE_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DELTANET_TARGETS = ["in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b", "out_proj"]
GATED_EXPERTS = ["experts.gate_up_proj", "experts.down_proj"]

# Default LoRA targets by transformers `model_type`: what peft accepts and vLLM can apply.
TARGETS_BY_TYPE: dict[str, tuple[list[str], list[str]]] = {
    "llama": (DENSE_TARGETS, []),
    "qwen3": (DENSE_TARGETS, []),
    "qwen2": (DENSE_TARGETS, []),
    "qwen3_5": (DENSE_TARGETS + DELTANET_TARGETS, []),
    "qwen3_5_text": (DENSE_TARGETS + DELTANET_TARGETS, []),
    "qwen3_5_moe": (["q_proj", "k_proj", "v_proj", "o_proj"] + DELTANET_TARGETS, GATED_EXPERTS),
    "qwen3_5_moe_text": (["q_proj", "k_proj", "v_proj", "o_proj"] + DELTANET_TARGETS, GATED_EXPERTS),
    "gpt_oss": (["q_proj", "k_proj", "v_proj", "o_proj"], GATED_EXPERTS),
    # Mamba's out_proj / conv1d are refused by peft, which also breaks "all-linear" here.
    "nemotron_h": (
        ["q_proj", "k_proj", "v_proj", "o_proj", "in_proj"],
        ["experts.up_proj", "experts.down_proj"],
    ),
}


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the short registry name
    hub_id: str
    family: str  # transformers model_type of the checkpoint (its text model's, minus `_text`)
    params: str  # total (active) parameters, for the table
    chat_template_kwargs: dict[str, object] = field(default_factory=dict)
    chat_format: str = "chatml"  # the hub tokenizer's chat template; rltrain applies it as shipped
    vllm_dtype: str = "bfloat16"


# Qwen3.5 and Nemotron 3 think by default; RL on short answers wants it off (sampling.enable_thinking).
NO_THINKING: dict[str, object] = {"enable_thinking": False}


def _qwen(size: str, moe: bool = False) -> ModelSpec:
    return ModelSpec(
        name=f"qwen3.5-{size.lower()}",
        hub_id=f"Qwen/Qwen3.5-{size}",
        family="qwen3_5_moe" if moe else "qwen3_5",
        params=size,
        chat_template_kwargs=dict(NO_THINKING),
        chat_format="chatml (qwen3.5, thinking off)",
    )


def _nemotron(name: str, hub_id: str, params: str) -> ModelSpec:
    return ModelSpec(name, hub_id, "nemotron_h", params, dict(NO_THINKING), "nemotron (thinking off)")


def _gpt_oss(size: str, params: str) -> ModelSpec:
    # gpt-oss ships MXFP4 experts; vLLM serves them as is on GPU, and the harmony template's
    # reasoning effort is set through sampling.reasoning_effort.
    return ModelSpec(
        f"gpt-oss-{size}",
        f"openai/gpt-oss-{size}",
        "gpt_oss",
        params,
        {"reasoning_effort": "low"},
        "harmony (reasoning low)",
    )


def _llama(size: str) -> ModelSpec:
    return ModelSpec(
        f"llama-3.2-{size.lower()}-instruct",
        f"meta-llama/Llama-3.2-{size}-Instruct",
        "llama",
        size,
        chat_format="llama3",
    )


REGISTRY: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        *(_qwen(size) for size in ("0.8B", "2B", "4B", "9B")),
        *(_qwen(size, moe=True) for size in ("35B-A3B", "122B-A10B", "397B-A17B")),
        _llama("1B"),
        _llama("3B"),
        _nemotron("nemotron-3-nano-30b", "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", "30B-A3B"),
        _nemotron("nemotron-3-super-120b", "nvidia/NVIDIA-Nemotron-3-Super-120B-A12B-BF16", "120B-A12B"),
        _gpt_oss("20b", "21B-A3.6B"),
        _gpt_oss("120b", "117B-A5.1B"),
    ]
}

# builtin:tiny-<name> -> the tiny family built locally (rltrain/tiny.py); dots and dashes accepted.
BUILTIN_ALIASES = {"tiny": "qwen3"}
# A real pretrained model from PyPI (rltrain/smollm2.py): SmolLM2-135M-Instruct, llama family.
REAL_BUILTINS = ("builtin:smollm2", "builtin:smollm2-135m", "builtin:smollm2-135m-instruct")


def find_spec(model: str) -> ModelSpec | None:
    """The registry entry for a short name or hub id (case-insensitive), else None."""
    key = model.lower()
    for spec in REGISTRY.values():
        if key in (spec.name, spec.hub_id.lower()):
            return spec
    return None


def resolve_model_path(model: str) -> str:
    """What `from_pretrained` should load: a local dir, a hub id, or the built tiny model's dir."""
    if model.lower() in REAL_BUILTINS:
        from rltrain.smollm2 import smollm2_path

        return str(smollm2_path())
    if model.startswith("builtin:"):
        from rltrain.tiny import tiny_model_path

        return str(tiny_model_path(builtin_family(model)))
    local = Path(model).expanduser()
    if local.is_dir():
        return str(local.resolve())
    spec = find_spec(model)
    return spec.hub_id if spec else model


def builtin_family(model: str) -> str:
    """The tiny family of `builtin:tiny[-FAMILY]`: `builtin:tiny-qwen3.5-moe` -> `qwen3_5_moe`."""
    from rltrain.tiny import FAMILIES

    kind = model.split(":", 1)[1].lower()
    family = BUILTIN_ALIASES.get(kind) or kind.removeprefix("tiny-").replace("-", "_").replace(".", "_")
    if family not in FAMILIES:
        names = ", ".join(["builtin:tiny"] + [f"builtin:tiny-{f}" for f in FAMILIES if f != "qwen3"])
        raise ValueError(f"model: unknown built-in {model!r} (have {names})")
    return family


def default_targets(model_type: str) -> tuple[list[str] | str, list[str]]:
    """(target_modules, target_parameters) for a transformers model_type; all-linear when unknown."""
    if model_type in TARGETS_BY_TYPE:
        modules, params = TARGETS_BY_TYPE[model_type]
        return list(modules), list(params)
    return "all-linear", []
