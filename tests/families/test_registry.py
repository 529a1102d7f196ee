"""The base-model registry, built-in names, and the adapter-export rules (no engine, no training)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rltrain.adapters import export_adapter, key_renames, landing_probe
from rltrain.families import SUPPORT, family_of, format_table
from rltrain.models import REGISTRY, builtin_family, default_targets, find_spec

SPEC_MODELS = {
    "Qwen/Qwen3.5-0.8B", "Qwen/Qwen3.5-2B", "Qwen/Qwen3.5-4B", "Qwen/Qwen3.5-9B",
    "Qwen/Qwen3.5-35B-A3B", "Qwen/Qwen3.5-122B-A10B", "Qwen/Qwen3.5-397B-A17B",
    "meta-llama/Llama-3.2-1B-Instruct", "meta-llama/Llama-3.2-3B-Instruct",
    "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", "nvidia/NVIDIA-Nemotron-3-Super-120B-A12B-BF16",
    "openai/gpt-oss-20b", "openai/gpt-oss-120b",
}  # fmt: skip


MOE_FAMILIES = {"qwen3_5_moe", "gpt_oss", "nemotron_h"}


def test_registry_covers_the_spec() -> None:
    assert {s.hub_id for s in REGISTRY.values()} == SPEC_MODELS
    for spec in REGISTRY.values():
        assert spec.family in SUPPORT, spec.name
        modules, params = default_targets(spec.family)
        assert modules and modules != "all-linear", spec.name
        # MoE experts are fused parameters: target_parameters
        assert bool(params) == (spec.family in MOE_FAMILIES), spec.name
        assert find_spec(spec.hub_id.upper()) is spec
    assert REGISTRY["qwen3.5-9b"].chat_template_kwargs == {"enable_thinking": False}
    assert REGISTRY["gpt-oss-20b"].chat_format.startswith("harmony")
    # peft refuses Mamba's out_proj / conv1d: never a Nemotron-H default
    assert not {"out_proj", "conv1d"} & set(default_targets("nemotron_h")[0])


def test_format_table_lists_every_model_and_backend() -> None:
    table = format_table()
    for spec in REGISTRY.values():
        row = next(line for line in table.splitlines() if line.startswith(spec.name + " "))
        assert spec.hub_id in row and spec.family in row
    assert "builtin:tiny-qwen3_5" in table and "hf (fallback)" in table
    llama = next(line for line in table.splitlines() if line.startswith("llama-3.2-1b"))
    assert llama.split()[-2:] == ["vllm", "vllm"]  # GPU, CPU


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("builtin:tiny", "qwen3"),
        ("builtin:tiny-llama", "llama"),
        ("builtin:tiny-qwen3.5", "qwen3_5"),
        ("builtin:tiny-qwen3.5-moe", "qwen3_5_moe"),
        ("builtin:tiny-gpt-oss", "gpt_oss"),
        ("builtin:tiny-nemotron_h", "nemotron_h"),
    ],
)
def test_builtin_names(name: str, family: str) -> None:
    assert builtin_family(name) == family


def test_unknown_builtin_names_the_choices() -> None:
    with pytest.raises(ValueError, match="builtin:tiny-qwen3_5"):
        builtin_family("builtin:tiny-mamba")


def test_key_renames_follow_the_checkpoint_layout() -> None:
    assert key_renames("qwen3_5") == [("base_model.model.model.", "base_model.model.model.language_model.")]
    assert key_renames("qwen3_5_moe")
    for flat in ("qwen3_5_text", "qwen3_5_moe_text", "llama", "gpt_oss", "nemotron_h", "unknown", None):
        assert key_renames(flat) == [], flat
    assert family_of("qwen3_5_moe_text") == "qwen3_5_moe"


def test_export_renames_keys_and_landing_probe_restores(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16)  # fmt: skip
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, target_modules=["q_proj"]))
    keys = set(load_file(export_adapter(model, tmp_path / "nested", "qwen3_5") / "adapter_model.safetensors"))
    assert keys and all(k.startswith("base_model.model.model.language_model.layers.") for k in keys)
    flat = set(load_file(export_adapter(model, tmp_path / "flat", "llama") / "adapter_model.safetensors"))
    assert all(k.startswith("base_model.model.model.layers.") for k in flat)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    with landing_probe(model):
        assert all(float(p.detach().abs().sum()) > 0 for p in lora_b)
    assert all(torch.count_nonzero(p) == 0 for p in lora_b)  # B back to its zero init
