"""Plain data types shared across the rollout side and the trainer.

`Sample` is the one hand-off from rollouts to the trainer: the trainer knows nothing else about how a
completion was produced (which backend, which environment).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class SamplingParams:
    """What a rollout backend needs to sample; built from the config's `[sampling]` section."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = disabled
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None  # per-call seed; backends derive one per prompt with `prompt_seed`
    seed_offset: int = 0  # global index of the first prompt (a rank's share starts past the others')

    def with_offset(self, offset: int) -> SamplingParams:
        return replace(self, seed_offset=offset)


def prompt_seed(seed: int, key: int | str) -> int:
    """The seed of the prompt at global index `key` in a call seeded `seed` (or of a later turn of an
    episode, keyed "group/member/turn").

    Hashed rather than `seed + index` so that consecutive step seeds never share a stream.
    """
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 2**62


@dataclass(frozen=True)
class Request:
    """`n` completions of one prompt, seeded on their own: a sample does not depend on its batch."""

    prompt_ids: list[int]
    n: int
    seed: int | None  # None: unseeded


def requests_for(prompts: list[list[int]], n: int, sampling: SamplingParams) -> list[Request]:
    """A group per prompt, seeded by the prompt's global index (shard-invariant)."""
    seed = sampling.seed
    return [
        Request(list(p), n, None if seed is None else prompt_seed(seed, sampling.seed_offset + i))
        for i, p in enumerate(prompts)
    ]


@dataclass
class Completion:
    """One sampled continuation: token ids, the sampler's logprob of each, and the decoded text."""

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str  # "stop" (a stop token ended it) or "length"
    version: int | None = None  # the adapter version the engine reports for its tokens (None: unreported)


@dataclass
class Group:
    """All completions sampled for one prompt (a GRPO group)."""

    prompt_ids: list[int]
    completions: list[Completion]


@dataclass
class Sample:
    """One scored rollout, ready for the trainer."""

    prompt_ids: list[int]
    completion_ids: list[int]
    inference_logprobs: list[float]  # one per completion token, from the rollout backend
    loss_mask: list[int]  # one per completion token: 1 = trained on
    reward: float
    advantage: float
    group_id: int = 0
    version: int = 0  # the adapter version (optimizer steps applied) that sampled it
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.completion_ids)
        if len(self.inference_logprobs) != n or len(self.loss_mask) != n:
            raise ValueError(
                f"Sample: completion_ids ({n}), inference_logprobs ({len(self.inference_logprobs)}) "
                f"and loss_mask ({len(self.loss_mask)}) must have the same length"
            )

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)
