"""A tiny local model that can learn, built at run time (nothing can be downloaded here).

A byte-level BPE trained on generated text, a ChatML template, and a 2-layer Qwen3 (or Llama) with
head_dim 64 (vLLM's CPU attention refuses 16) and initializer_range 0.3 (at the default 0.02 the
logits are nearly uniform and LoRA cannot move them). Built deterministically: the same recipe gives
the same tokenizer and weights, so the cache key is the recipe version.

The spec's other families get the same tokenizer and a tiny model of their real architecture, laid out
as the hub checkpoints are (Qwen3.5 as `Qwen3_5ForConditionalGeneration`, vision tower included), so
that the adapter-export and vLLM paths are exercised exactly as on the real models.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rltrain.fsutil import atomic_path

RECIPE_VERSION = 2  # 2: the template renders tools (Qwen3 / Hermes style); weights are unchanged
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# ChatML, plus tools the way Qwen3's template renders them: signatures in the system message, calls as
# <tool_call> JSON blocks, results as <tool_response> user turns. Without tools it is plain ChatML.
# (transformers renders with trim_blocks: a newline right after a tag is written as {{ '\\n' }}.)
CHATML_TEMPLATE = (
    "{% set ns = namespace(start=0) %}"
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n"
    "{% set ns.start = 1 %}{% endif %}"
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
    "{% for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{% endfor %}{{ '\\n' }}</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\n</tool_call><|im_end|>\n{% endif %}"
    "{% for message in messages[ns.start:] %}"
    "{% if message['role'] == 'tool' %}"
    "<|im_start|>user\n<tool_response>\n{{ message['content'] }}\n</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "{% for call in message.get('tool_calls') or [] %}{{ '\\n' }}<tool_call>\n"
    "{\"name\": \"{{ call['function']['name'] }}\", "
    "\"arguments\": {{ call['function']['arguments'] | tojson }}}"
    "\n</tool_call>{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = (
    "the a of to and in is it you that he was for on are with as his they be at one have this from "
    "or had by word but what some we can out other were all there when up use your how said an each "
    "she which do their time if will way about many then them write would like so these her long make "
    "thing see him two has look more day could go come did number sound no most people my over know "
    "water than call first who may down side been now find any new work part take get place made live "
    "where after back little only round man year came show every good me give our under name very "
    "through just form sentence great think say help low line differ turn cause much mean before move "
    "right boy old too same tell does set three want air well also play small end put home read hand "
    "reverse text answer question letters digits count sum add total"
).split()
FAMILIES = ("qwen3", "llama", "qwen3_5", "qwen3_5_moe", "gpt_oss", "nemotron_h")
# Families whose checkpoint is a vision-language model: built as the hub ships them.
CONDITIONAL_GENERATION = {
    "qwen3_5": "Qwen3_5ForConditionalGeneration",
    "qwen3_5_moe": "Qwen3_5MoeForConditionalGeneration",
}


def _corpus(seed: int = 0, lines: int = 3000) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        kind = rng.random()
        if kind < 0.4:
            out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))))
        elif kind < 0.7:
            out.append(" ".join(str(rng.randint(0, 9999)) for _ in range(rng.randint(1, 6))))
        else:
            out.append(
                " ".join(
                    rng.choice(WORDS) if rng.random() < 0.6 else str(rng.randint(0, 99)) for _ in range(8)
                )
            )
    return out


def _qwen3_5_pretokenizer(tok: Any) -> None:
    """What transformers' Qwen3_5Tokenizer imposes on any qwen3_5 checkpoint's tokenizer when it loads.

    transformers 5 ignores the saved tokenizer class for qwen3_5 and rebuilds it with this split (digits
    one by one); a BPE trained without it would tokenize differently after reload.
    """
    from tokenizers import Regex, normalizers, pre_tokenizers
    from transformers.models.qwen3_5.tokenization_qwen3_5 import PRETOKENIZE_REGEX

    tok.normalizer = normalizers.NFC()
    split = pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )


def _build_tokenizer(vocab_size: int, family: str = "qwen3"):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if family in CONDITIONAL_GENERATION:
        _qwen3_5_pretokenizer(tok)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        chat_template=CHATML_TEMPLATE,
    )


def _model_config(family: str, vocab_size: int, eos_ids: list[int], pad_id: int):  # type: ignore[no-untyped-def]
    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=2048,
        initializer_range=0.3,
        tie_word_embeddings=False,
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
        bos_token_id=None,
        torch_dtype="float32",
    )
    if family == "qwen3":
        from transformers import Qwen3Config

        return Qwen3Config(**common)
    if family == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common)
    return _family_config(family, common)


def _qwen3_5_config(moe: bool, common: dict[str, Any]):  # type: ignore[no-untyped-def]
    from transformers import Qwen3_5Config, Qwen3_5MoeConfig

    # One Gated DeltaNet layer and one full-attention layer, like the real 3:1 stack in miniature.
    # DeltaNet head dims of 32 fail in vLLM's CPU kernel; 64 works.
    text = dict(common, num_hidden_layers=2, layer_types=["linear_attention", "full_attention"])
    text.update(linear_key_head_dim=64, linear_value_head_dim=64, linear_num_key_heads=2)
    text.update(linear_num_value_heads=2, linear_conv_kernel_dim=4)
    text.pop("torch_dtype")
    if moe:
        text.pop("intermediate_size")
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64)
        text.update(shared_expert_intermediate_size=64)
    vision = dict(depth=1, hidden_size=64, intermediate_size=128, num_heads=1, out_hidden_size=128)
    vision.update(patch_size=16, temporal_patch_size=2, spatial_merge_size=2, num_position_embeddings=64)
    # No image tokens in this vocabulary: point the placeholders past its end, where no text lands.
    unused = common["vocab_size"]
    media = dict(image_token_id=unused, video_token_id=unused)
    media.update(vision_start_token_id=unused, vision_end_token_id=unused)
    config_class = Qwen3_5MoeConfig if moe else Qwen3_5Config
    return config_class(text_config=text, vision_config=vision, tie_word_embeddings=False, **media)


def _family_config(family: str, common: dict[str, Any]):  # type: ignore[no-untyped-def]
    """The spec's other architectures at the tiny model's width (hidden 128, head_dim 64)."""
    if family in ("qwen3_5", "qwen3_5_moe"):
        return _qwen3_5_config(family == "qwen3_5_moe", common)
    if family == "gpt_oss":
        from transformers import GptOssConfig

        # vLLM reads the yarn keys of the real checkpoints; without them it refuses the config.
        rope = dict(rope_type="yarn", factor=32.0, beta_fast=32.0, beta_slow=1.0, truncate=False)
        rope.update(original_max_position_embeddings=64, rope_theta=150000.0)  # x32 = the 2048 context
        return GptOssConfig(
            **dict(common, intermediate_size=128),
            num_local_experts=4,
            num_experts_per_tok=2,
            sliding_window=128,
            layer_types=["sliding_attention", "full_attention"],
            rope_parameters=rope,
        )
    from transformers import NemotronHConfig

    # Mamba2, MoE, attention, MoE: the Nemotron 3 pattern in four layers.
    return NemotronHConfig(
        **dict(common, num_hidden_layers=4),
        layers_block_type=["linear_attention", "moe", "full_attention", "moe"],
        ssm_state_size=16,
        mamba_num_heads=4,
        mamba_head_dim=64,
        n_groups=1,
        expand=2,
        chunk_size=128,
        n_routed_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=64,
        moe_shared_expert_intermediate_size=64,
        n_shared_experts=1,
    )


def _instantiate(family: str, config: Any) -> Any:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    if family in CONDITIONAL_GENERATION:
        return getattr(transformers, CONDITIONAL_GENERATION[family])(config).to(torch.float32)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def build_tiny_model(
    out_dir: str | Path, family: str = "qwen3", vocab_size: int = 1024, seed: int = 0
) -> Path:
    """Write a tiny model + tokenizer to `out_dir` (atomically: a half-built dir is never visible)."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig

    if family not in FAMILIES:
        raise ValueError(f"tiny model family {family!r}: expected one of {', '.join(FAMILIES)}")
    out = Path(out_dir)
    tokenizer = _build_tokenizer(vocab_size, family)
    eos_ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = _model_config(family, len(tokenizer), eos_ids, pad_id)
    torch.manual_seed(seed)
    model = _instantiate(family, config)
    model.generation_config = GenerationConfig(eos_token_id=eos_ids, pad_token_id=pad_id, do_sample=True)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        probe = "write 42 numbers"
        reloaded = AutoTokenizer.from_pretrained(tmp)
        if reloaded(probe)["input_ids"] != tokenizer(probe)["input_ids"]:
            raise RuntimeError("tiny tokenizer changed on reload (transformers swapped the class?)")

    return publish_dir(out, write, "rltrain_tiny.json", {"family": family, "recipe": RECIPE_VERSION})


def publish_dir(out: Path, write: Callable[[Path], None], marker: str, info: dict[str, Any]) -> Path:
    """Build a model directory beside `out` and rename it into place, `marker` last: a half-built
    directory is never visible, and of two processes building the same one, the first one's is kept."""
    if out.exists() and not (out / marker).is_file():
        shutil.rmtree(out)  # an explicit target that holds something else
    with atomic_path(out, directory=True, replace=False) as tmp:
        write(tmp)
        (tmp / marker).write_text(json.dumps(info))
    return out


def cache_root() -> Path:
    base = os.environ.get("RLTRAIN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "rltrain"
    )
    return Path(base)


def tiny_model_path(family: str = "qwen3") -> Path:
    """The cached tiny model of `family`, built on first use."""
    path = cache_root() / "models" / f"tiny-{family}-v{RECIPE_VERSION}"
    if not (path / "rltrain_tiny.json").is_file():
        build_tiny_model(path, family=family)
    return path
