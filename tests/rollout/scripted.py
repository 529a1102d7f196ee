"""A scripted stand-in model and a collector around it, for the multi-turn episode tests.

The tiny model cannot write a tool call or a <think> block, so these tests script the model's replies
(a reply per context text). Everything else is real: the tiny tokenizer and its Qwen3-style template,
the bridge, the parsers, worker processes running env_response and tools.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from rltrain.envs.loader import load_rltrain_environment
from rltrain.envs.scoring import Scorer
from rltrain.envs.workers import EnvSpec, WorkerPool
from rltrain.kinds.base import EnvSlot, RunnerContext
from rltrain.kinds.native import NativeEnv
from rltrain.orchestrator.assemble import GroupSettings
from rltrain.orchestrator.collect import Collector
from rltrain.rollout.episodes import EpisodeLimits
from rltrain.rollout.prompting import PromptEncoder
from rltrain.types import Completion, Group, Request, SamplingParams, requests_for

# ChatML that drops a past assistant turn's <think> block once the conversation moves on (as Qwen3 does)
THINK_DROPPING = (
    "{% for m in messages %}{% set c = m['content'] %}"
    "{% if m['role'] == 'assistant' and not loop.last and '</think>' in c %}"
    "{% set c = c.split('</think>')[-1] %}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ c }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

ADD_TOOL = '''
def add(a: int, b: int) -> int:
    """Adds.

    Args:
        a: a number
        b: another
    """
    return a + b
'''  # a tool, as environment source


class Scripted:
    """A stand-in model: `reply(context text) -> reply text`; one token per character when `chars`.
    Each turn ends with `stop` (the token it stops on; None: the reply ends with its own) and `finish`
    ("stop", or "length": no stop token)."""

    name, timings, collective, reads_live_weights, version = "scripted", {}, False, False, 0

    def __init__(
        self,
        tok: Any,
        reply: Callable[[str], str],
        chars: bool = False,
        stop: str | None = "<|im_end|>",
        finish: str = "stop",
    ) -> None:
        self.tok, self.reply, self.chars, self.stop, self.finish = tok, reply, chars, stop, finish
        self.batches: list[int] = []

    def _ids(self, text: str) -> list[int]:
        if self.chars:  # a valid but non-canonical tokenization, as a sampler may produce
            return [self.tok.convert_tokens_to_ids(self.tok.tokenize(c)[0]) for c in text]
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def sample(self, requests: Sequence[Request], sampling: SamplingParams) -> list[Group]:
        self.batches.append(len(requests))
        out = []
        for r in requests:
            text = self.reply(self.tok.decode(r.prompt_ids))
            ids = self._ids(text)
            if self.finish == "stop" and self.stop is not None:
                ids.append(self.tok.convert_tokens_to_ids(self.stop))
            out.append(Group(r.prompt_ids, [Completion(ids, [-0.5] * len(ids), text, self.finish)] * r.n))
        return out

    def generate(self, prompts: Sequence[list[int]], n: int, sampling: SamplingParams) -> list[Group]:
        return self.sample(requests_for(list(prompts), n, sampling), sampling)

    def close(self) -> None: ...


def with_template(tok: Any, template: str, specials: Sequence[str] = ()) -> Any:
    """A copy of the tokenizer with another chat template (and special tokens added)."""
    copy = AutoTokenizer.from_pretrained(tok.name_or_path)
    copy.chat_template = template
    if specials:
        copy.add_special_tokens({"additional_special_tokens": list(specials)})
    return copy


def make_collector(env_id: str, model: Any, tokenizer: Any, group: int = 2, **limits: Any) -> Collector:
    """A collector for one native environment on `model`; `limits` override EpisodeLimits' fields."""
    env = NativeEnv(load_rltrain_environment(env_id), env_id, {})
    pool = WorkerPool([EnvSpec("e", env_id, {})], size=2)
    settings: dict[str, Any] = dict(max_context=4096, turn_timeout_s=10, episode_timeout_s=60)
    ctx = RunnerContext(
        model, PromptEncoder(tokenizer, {}), EpisodeLimits(**settings | limits), Scorer(pool), ""
    )
    return Collector([EnvSlot("e", env, 1.0)], ctx, GroupSettings(group, True, False))


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)
