"""Episodes: one per completion of a group, single-turn or multi-turn; each starts from the step's
batched first turn (a group's prompt is prefilled once), and rollout/driver.py runs the multi-turn ones on.

Everything the model writes, a tool returns or an environment raises is untrusted: whatever goes wrong
inside one episode ends that episode (`finish = "error"`, its reason in `error`), never the step. An
episode that failed for a reason outside the model (the engine, the worker pool, the environment's own
code or messages, the episode's timeout) is `outside`: recorded and counted, but not trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rltrain.envs.base import Environment, Message, Rollout, Row
from rltrain.rollout.bridge import ChatBridge
from rltrain.rollout.toolcalls import ParsedTurn, assistant_message, parse_turn
from rltrain.types import Completion

Decode = Callable[[list[int]], str]


@dataclass(frozen=True)
class EpisodeLimits:
    max_context: int  # prompt and every turn together (the engine's context length)
    turn_timeout_s: float  # one env_response or tool call
    episode_timeout_s: float  # the whole episode after its first turn
    batch_window_s: float = 0.02  # how long a generation waits for episodes still in environment code
    max_env_chars: int = 8192  # one tool result or environment message, in characters (the rest is cut)


@dataclass
class Part:
    """One trainable sample of an episode: a prompt and the turns after it (a split starts another)."""

    prompt_ids: list[int]
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)


@dataclass
class Episode:
    env_name: str
    env: Environment
    row: Row
    group: int  # global group id
    member: int  # index in the group
    bridge: ChatBridge | None  # multi-turn only
    parts: list[Part]
    messages: list[Message] = field(default_factory=list)  # the whole conversation
    state: dict[str, Any] = field(default_factory=dict)
    text: str = ""  # the first turn's text (what a single-turn reward function scores)
    finish: str = "stop"  # stop | length | max_turns | done | context | timeout | error
    error: str | None = None
    outside: bool = False  # failed outside the model (engine, workers, environment, timeout): not trained
    truncated: bool = False  # a turn ran out of tokens (finish "length"), whatever ended the episode
    refused_sampling: int = 0  # sampling overrides the engine endpoint refused for this episode
    turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    splits: int = 0
    env_s: float = 0.0
    tool_s: float = 0.0
    input_tokens: int = 0  # prompts and environment-inserted tokens
    output_tokens: int = 0  # sampled tokens
    reward: float | None = None  # scored by the environment itself (verifiers v1), not by reward functions
    reward_parts: dict[str, float] = field(default_factory=dict)
    shown_from: int | None = None  # the first message after the prompt (None: after the row's prompt)
    version: int | None = None  # the oldest adapter version the engine reported for its turns

    @property
    def part(self) -> Part:
        return self.parts[-1]

    def context(self) -> list[int]:
        return self.part.prompt_ids + self.part.ids

    def add_sampled(self, c: Completion) -> None:
        self.part.ids += c.token_ids
        self.part.logprobs += c.logprobs
        self.part.mask += [1] * len(c.token_ids)
        self.output_tokens += len(c.token_ids)
        self.turns += 1
        self.finish = c.finish_reason
        self.truncated |= c.finish_reason == "length"
        if c.version is not None:
            self.version = c.version if self.version is None else min(self.version, c.version)

    def add_inserted(self, ids: list[int]) -> None:
        self.part.ids += ids
        self.part.logprobs += [0.0] * len(ids)
        self.part.mask += [0] * len(ids)
        self.input_tokens += len(ids)

    def split(self, prompt_ids: list[int]) -> None:
        self.parts.append(Part(prompt_ids))
        self.input_tokens += len(prompt_ids)
        self.splits += 1

    def fail(self, error: str, outside: bool, finish: str = "error") -> None:
        self.error, self.outside, self.finish = error[:400], outside, finish

    def after_prompt(self) -> list[Message]:
        return self.messages[len(self.row.prompt) if self.shown_from is None else self.shown_from :]

    def rollout(self) -> Rollout:
        """What the reward functions see: the text, or (multi-turn) the messages after the prompt."""
        if not self.env.multi_turn:
            return Rollout(self.text, self.state)
        self.state["turn"] = self.turns  # the assistant turns taken, whatever ended the episode
        return Rollout(self.after_prompt(), self.state)

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"finish": self.finish}
        if self.env.multi_turn:
            out |= {"turns": self.turns, "tool_calls": self.tool_calls, "tool_errors": self.tool_errors}
            out |= {"splits": self.splits, "env_s": self.env_s, "tool_s": self.tool_s}
            out |= {"truncated": self.truncated, "messages": self.after_prompt()}
        if self.refused_sampling:
            out["refused_sampling"] = self.refused_sampling
        if self.error:
            out["error"] = self.error
        if self.outside:
            out["excluded"] = True  # kept in the record, not in the loss
        return out


def start_episode(ep: Episode, first: Completion, decode: Decode, fmt: str = "hermes") -> ParsedTurn:
    """Take the batched first turn; returns the parsed turn (tool calls included). `fmt`: the chat
    format's tool-call format (harmony turns are read by channel)."""
    ep.input_tokens += len(ep.part.prompt_ids)
    ep.add_sampled(first)
    ep.messages = [*ep.row.prompt]
    ep.state = ep.env.initial_state(ep.row)
    parsed = append_turn(ep, first, decode, fmt)
    ep.text = parsed.content if fmt == "harmony" else first.text  # harmony: the final channel
    return parsed


def append_turn(ep: Episode, c: Completion, decode: Decode, fmt: str) -> ParsedTurn:
    tools = bool(ep.env.tools) and ep.bridge is not None
    if tools or fmt == "harmony":  # special tokens kept: harmony's channels and calls are made of them
        ids = c.token_ids[:-1] if c.finish_reason == "stop" else c.token_ids  # without the stop token
        parsed = parse_turn(decode(ids), fmt)
        if not tools:
            parsed = ParsedTurn(parsed.content, thinking=parsed.thinking)
        ep.tool_errors += len(parsed.errors)  # malformed calls: counted even on the last turn
    else:
        parsed = ParsedTurn(c.text)
    ep.messages.append(assistant_message(parsed))
    return parsed
