"""What a run needs of the engine, derived from its data: context length and (on CPU) KV cache.

A real model's own context (8192 for SmolLM2) is far more than an RL run on short prompts uses, and
vLLM sizes its KV cache for it: on a small machine the engine then fails at start. So the default
`max_model_len` is what the run needs, capped by the model's limit: the longest prompt (after the chat
template) plus `max_tokens`, or for multi-turn environments the episode's budget. The CPU KV cache is
sized to hold `max_inflight_rollouts` (else the step's rollouts) sequences of that length, in vLLM's
whole blocks.

`seq_len` (prime-rl's name) caps prompt + completion: longer prompts are dropped from the data with a
count, as prime-rl filters them. Without it, a prompt that cannot fit the model is an error that names
the row and the numbers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from rltrain.config import Config
from rltrain.kinds.base import EnvSlot
from rltrain.rollout.prompting import PromptEncoder

log = logging.getLogger("rltrain")
ENV_TURN_ALLOWANCE = 128  # tokens allowed per environment answer between two assistant turns
ROUND = 64
CPU_KV_BLOCK = 128  # vLLM 0.32's KV block size on CPU (vllm/platforms/cpu.py), unless a block_size is set


@dataclass(frozen=True)
class Sizing:
    max_model_len: int  # the engine's context: prompt and every turn of an episode
    kv_cache_bytes: int  # CPU KV cache for the in-flight sequences at that length
    dropped: dict[str, int] = field(default_factory=dict)  # prompts over seq_len, per environment


def kv_bytes_per_token(model_config: Any, dtype_bytes: int) -> int:
    """K and V for every layer and KV head (the attention layers only, for hybrid models)."""
    text = getattr(model_config, "text_config", None) or model_config
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    layer_types = getattr(text, "layer_types", None)
    attention = ("full_attention", "sliding_attention", "attention")
    layers = sum(t in attention for t in layer_types) if layer_types else text.num_hidden_layers
    return 2 * max(int(layers), 1) * int(heads) * int(head_dim) * dtype_bytes


def _budget(cfg: Config, slot: EnvSlot) -> int:
    """Tokens after the prompt an episode may take: one completion, or every turn with the
    environment's messages in between (each up to ENV_TURN_ALLOWANCE or a turn's length)."""
    turns = max(slot.env.max_turns, 1)
    return turns * cfg.sampling.max_tokens + (turns - 1) * max(cfg.sampling.max_tokens, ENV_TURN_ALLOWANCE)


def _drop_over_seq_len(cfg: Config, slot: EnvSlot, lengths: list[int], budget: int) -> tuple[list[int], int]:
    """Rows whose prompt + budget exceed seq_len leave the data; returns the kept lengths and the count."""
    assert cfg.seq_len is not None
    keep = [n + budget <= cfg.seq_len for n in lengths]
    if not any(keep):
        raise ValueError(
            f"seq_len {cfg.seq_len}: every prompt of environment {slot.name} is longer than seq_len "
            f"minus the completion budget ({cfg.seq_len} - {budget}); the shortest has {min(lengths)}"
        )
    if all(keep):
        return lengths, 0
    slot.env.rows = [row for row, ok in zip(slot.env.rows, keep, strict=True) if ok]
    log.info(
        "notice: seq_len %d: dropped %d of %d prompts of %s (prompt + %d tokens does not fit)",
        *(cfg.seq_len, keep.count(False), len(keep), slot.name, budget),
    )
    return [n for n, ok in zip(lengths, keep, strict=True) if ok], keep.count(False)


def plan(cfg: Config, slots: list[EnvSlot], encoder: PromptEncoder, model_config: Any) -> Sizing:
    """Size the engine for the run; drops prompts over `seq_len` from the slots' rows (in place)."""
    text = getattr(model_config, "text_config", None) or model_config
    caps = [
        x
        for x in (getattr(text, "max_position_embeddings", None), cfg.seq_len, cfg.rollout.max_model_len)
        if x
    ]
    cap = int(min(caps)) if caps else None
    needed, dropped = 0, {}
    for slot in slots:
        budget = _budget(cfg, slot)
        measured = slot.env.prompt_lengths(encoder)
        lengths = measured.tokens
        if cfg.seq_len and measured.measured:
            lengths, count = _drop_over_seq_len(cfg, slot, lengths, budget)
            if count:
                dropped[slot.name] = count
        longest = max(lengths)
        if cap is not None and longest + cfg.sampling.max_tokens > cap:
            row = lengths.index(longest)
            raise ValueError(
                f"environment {slot.name}, row {row}: its prompt has {longest} tokens; with sampling."
                f"max_tokens {cfg.sampling.max_tokens} it needs {longest + cfg.sampling.max_tokens}, "
                f"over the model's context of {cap}; set seq_len to drop such prompts, or lower max_tokens"
            )
        needed = max(needed, longest + budget)
    length = cfg.rollout.max_model_len or min(math.ceil(needed / ROUND) * ROUND, cap or needed)
    return Sizing(length, _kv_cache_bytes(cfg, model_config, length), dropped)


def kv_cache_tokens(inflight: int, length: int, block: int = CPU_KV_BLOCK) -> int:
    """KV-cache slots for `inflight` sequences of up to `length` tokens. vLLM gives each sequence whole
    blocks, and block 0 is its null block: sized per token instead, a 64-token context on CPU's
    128-token blocks held half the sequences, and a 32-rollout step ran in two waves (issue 29)."""
    return (math.ceil(length / block) * inflight + 1) * block


def _kv_cache_bytes(cfg: Config, model_config: Any, length: int) -> int:
    if cfg.rollout.cpu_kv_cache_gib is not None:
        return int(cfg.rollout.cpu_kv_cache_gib * 2**30)
    dtype_bytes = 2 if cfg.run.dtype in ("bfloat16", "float16") else 4
    inflight = cfg.max_inflight_rollouts or cfg.batch_size
    return int(kv_bytes_per_token(model_config, dtype_bytes) * kv_cache_tokens(inflight, length) * 1.1)
