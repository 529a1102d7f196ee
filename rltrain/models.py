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
    family: str  # transformers model_type of the text model
    params: str  # total (active) parameters, for the table
    chat_template_kwargs: dict[str, object] = field(default_factory=dict)
    vllm_dtype: str = "bfloat16"
    moe: bool = False


def _qwen(size: str, moe: bool = False) -> ModelSpec:
    return ModelSpec(
        name=f"qwen3.5-{size.lower()}",
        hub_id=f"Qwen/Qwen3.5-{size}",
        family="qwen3_5_moe" if moe else "qwen3_5",
        params=size,
        chat_template_kwargs={"enable_thinking": False},
        moe=moe,
    )


REGISTRY: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        *(_qwen(size) for size in ("0.8B", "2B", "4B", "9B")),
        *(_qwen(size, moe=True) for size in ("35B-A3B", "122B-A10B", "397B-A17B")),
        ModelSpec("llama-3.2-1b-instruct", "meta-llama/Llama-3.2-1B-Instruct", "llama", "1B"),
        ModelSpec("llama-3.2-3b-instruct", "meta-llama/Llama-3.2-3B-Instruct", "llama", "3B"),
        ModelSpec(
            "nemotron-3-nano-30b",
            "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16",
            "nemotron_h",
            "30B-A3B",
            {"enable_thinking": False},
            moe=True,
        ),
        ModelSpec(
            "nemotron-3-super-120b",
            "nvidia/NVIDIA-Nemotron-3-Super-120B-A12B-BF16",
            "nemotron_h",
            "120B-A12B",
            {"enable_thinking": False},
            moe=True,
        ),
        ModelSpec(
            "gpt-oss-20b", "openai/gpt-oss-20b", "gpt_oss", "21B-A3.6B", {"reasoning_effort": "low"}, moe=True
        ),
        ModelSpec(
            "gpt-oss-120b",
            "openai/gpt-oss-120b",
            "gpt_oss",
            "117B-A5.1B",
            {"reasoning_effort": "low"},
            moe=True,
        ),
    ]
}


def find_spec(model: str) -> ModelSpec | None:
    """The registry entry for a short name or hub id (case-insensitive), else None."""
    key = model.lower()
    for spec in REGISTRY.values():
        if key in (spec.name, spec.hub_id.lower()):
            return spec
    return None


def resolve_model_path(model: str) -> str:
    """What `from_pretrained` should load: a local dir, a hub id, or the built tiny model's dir."""
    if model.startswith("builtin:"):
        from rltrain.tiny import FAMILIES, tiny_model_path

        kind = model.split(":", 1)[1]
        family = "qwen3" if kind == "tiny" else kind.removeprefix("tiny-")
        if family not in FAMILIES:
            raise ValueError(f"model: unknown built-in {model!r} (have builtin:tiny, builtin:tiny-llama)")
        return str(tiny_model_path(family))
    local = Path(model).expanduser()
    if local.is_dir():
        return str(local.resolve())
    spec = find_spec(model)
    return spec.hub_id if spec else model


def default_targets(model_type: str) -> tuple[list[str] | str, list[str]]:
    """(target_modules, target_parameters) for a transformers model_type; all-linear when unknown."""
    if model_type in TARGETS_BY_TYPE:
        modules, params = TARGETS_BY_TYPE[model_type]
        return list(modules), list(params)
    return "all-linear", []
