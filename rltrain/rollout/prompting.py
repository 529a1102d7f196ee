"""What the model is asked and how it is sampled: chat template, stop tokens, `SamplingParams`.

The one place that builds them, for training, `[eval]` and `python -m rltrain eval` alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rltrain.config import Config
from rltrain.models import find_spec
from rltrain.types import SamplingParams

# End-of-turn tokens of the chat formats rltrain supports (ChatML, Llama 3, harmony).
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|return|>", "<|call|>")


def template_kwargs(cfg: Config) -> dict[str, Any]:
    """Chat-template switches: the registry's defaults for the model, then the config's."""
    spec = find_spec(cfg.model)
    kwargs: dict[str, Any] = dict(spec.chat_template_kwargs) if spec else {}
    if cfg.sampling.enable_thinking is not None:
        kwargs["enable_thinking"] = cfg.sampling.enable_thinking
    if cfg.sampling.reasoning_effort is not None:
        kwargs["reasoning_effort"] = cfg.sampling.reasoning_effort
    return kwargs


class PromptEncoder:
    """Chat messages -> token ids through the tokenizer's chat template (with its switches)."""

    def __init__(self, tokenizer: Any, template_kwargs: dict[str, Any]) -> None:
        self.tokenizer = tokenizer
        self.template_kwargs = template_kwargs

    def encode(self, messages: list[dict[str, Any]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **self.template_kwargs
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def stop_token_ids(tokenizer: Any, generation_eos: int | list[int] | None) -> tuple[int, ...]:
    """EOS of the tokenizer and the generation config, plus the chat formats' end-of-turn tokens."""
    ids = set(generation_eos if isinstance(generation_eos, list) else [generation_eos])
    ids.add(tokenizer.eos_token_id)
    for tok in END_OF_TURN:
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return tuple(sorted(i for i in ids if isinstance(i, int) and i >= 0))


@dataclass(frozen=True)
class Prompting:
    """The encoder and the sampling settings of a run, built once from the config and the tokenizer."""

    encoder: PromptEncoder
    stop_ids: tuple[int, ...]
    cfg: Config

    @classmethod
    def build(cls, cfg: Config, tokenizer: Any, generation_eos: int | list[int] | None) -> Prompting:
        encoder = PromptEncoder(tokenizer, template_kwargs(cfg))
        return cls(encoder, stop_token_ids(tokenizer, generation_eos), cfg)

    def sampling(self, step: int) -> SamplingParams:
        """One seed per step: a resumed run samples exactly what the uninterrupted run sampled."""
        s = self.cfg.sampling
        seed = self.cfg.run.seed * 1_000_003 + step
        return SamplingParams(s.max_tokens, s.temperature, s.top_p, s.top_k, self.stop_ids, seed=seed)
