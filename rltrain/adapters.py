"""Export the trainer's peft adapter so that the rollout engine really applies it, per model family.

peft names adapter weights after the module tree the trainer loaded. vLLM serves the checkpoint's own
layout, and drops adapter weights whose names match none of its modules WITHOUT a warning. The two
differ for Qwen3.5: the hub checkpoints are `Qwen3_5ForConditionalGeneration` (text weights under
`model.language_model.`), while AutoModelForCausalLM loads only the text model (`model.layers.`). So the
export renames the keys, and `landing_probe` gives the landed check something to see on the first sync,
when a fresh adapter (LoRA B = 0) cannot differ from the base model whether it landed or not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rltrain.families import family_of, support_for

ADAPTER_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


def key_renames(model_type: str | None) -> list[tuple[str, str]]:
    """(old prefix, new prefix) pairs that map peft's key names onto the checkpoint's layout.

    `model_type` is the checkpoint's (config.json), e.g. `qwen3_5`: a ConditionalGeneration checkpoint.
    A text-only Qwen3.5 checkpoint says `qwen3_5_text` and keeps peft's names.
    """
    support = support_for(model_type)
    if support is None or not support.nested_language_model or model_type != family_of(model_type or ""):
        return []
    return [(f"{PEFT_PREFIX}model.", f"{PEFT_PREFIX}model.language_model.")]


def _rename(key: str, renames: list[tuple[str, str]]) -> str:
    for old, new in renames:
        if key.startswith(old) and not key.startswith(new):
            return new + key[len(old) :]
    return key


def export_adapter(
    policy_model: Any, path: Path, model_type: str | None, state: dict[str, Any] | None = None
) -> Path:
    """Save `policy_model`'s adapter (a peft model) to `path`, named as the rollout engine expects.

    `model_type` is the base checkpoint's (rltrain.families.checkpoint_model_type), not the loaded model's.
    `state`: the adapter's tensors when the model cannot give them itself (sharded: Policy.adapter_state).
    """
    from safetensors.torch import load_file, save_file

    path = Path(path)
    policy_model.save_pretrained(str(path), state_dict=state)
    renames = key_renames(model_type)
    if renames:
        weights = path / ADAPTER_FILE
        tensors = {_rename(k, renames): v for k, v in load_file(str(weights)).items()}
        save_file(tensors, str(weights), metadata={"format": "pt"})
    return path


@contextmanager
def landing_probe(policy_model: Any, seed: int = 0, scale: float = 0.1) -> Iterator[None]:
    """Temporarily give every LoRA B matrix random values, so the adapter visibly moves the model.

    Export and load the adapter inside this block and run the landed check: an engine that ignores the
    adapter then disagrees with the trainer even on the first sync. The real weights come back after.
    """
    import torch

    from rltrain.trainer.fsdp import like

    params = [p for name, p in policy_model.named_parameters() if "lora_B" in name]
    saved = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(seed)  # the same values on every rank: shards stay consistent
    try:
        with torch.no_grad():
            for p in params:
                p.copy_(like(torch.randn(p.shape, generator=gen, dtype=torch.float32) * scale, p))
        yield
    finally:
        with torch.no_grad():
            for p, value in zip(params, saved, strict=True):
                p.copy_(value)
