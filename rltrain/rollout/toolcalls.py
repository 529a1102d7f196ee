"""Tool calls in each model family's own format, parsed out of a sampled assistant turn.

- `hermes`: Qwen3 / Qwen3.5 and ChatML models: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`,
  one block per call.
- `llama3_json`: Llama 3.x: the whole reply is `{"name": ..., "parameters": {...}}` (optionally after
  `<|python_tag|>`; several calls separated by `;`).
- `harmony`: gpt-oss: `<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}<|call|>`.

A call that cannot be parsed is not dropped: it comes back as an error, which the episode sends to the
model as a tool message (and counts), so the model learns the format instead of the run crashing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("hermes", "llama3_json", "harmony")
_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_HARMONY = re.compile(
    r"to=functions\.([\w.\-]+)[^<]*(?:<\|constrain\|>\s*\w+)?\s*<\|message\|>(.*?)(?:<\|call\|>|<\|end\|>|$)",
    re.DOTALL,
)


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = ""


@dataclass
class ParsedTurn:
    content: str  # the reply without its tool-call markup
    calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # malformed calls, as messages for the model


def _call_from_json(text: str, args_key: str) -> ToolCall:
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ValueError('a tool call must be a JSON object with a "name"')
    args = data.get(args_key, data.get("arguments", {}))
    if isinstance(args, str):  # some models double-encode the arguments
        args = json.loads(args)
    if not isinstance(args, dict):
        raise ValueError(f'"{args_key}" must be a JSON object')
    return ToolCall(data["name"], args)


def _hermes(text: str) -> ParsedTurn:
    out = ParsedTurn(_HERMES.sub("", text).strip())
    for body in _HERMES.findall(text):
        try:
            out.calls.append(_call_from_json(body, "arguments"))
        except (ValueError, json.JSONDecodeError) as err:
            out.errors.append(f"could not parse tool call {body[:200]!r}: {err}")
    return out


def _llama3_json(text: str) -> ParsedTurn:
    body = text.replace("<|python_tag|>", "").strip()
    if not body.startswith("{"):
        return ParsedTurn(text.strip())
    out, decoder, at = ParsedTurn(""), json.JSONDecoder(), 0
    while at < len(body):
        try:
            data, end = decoder.raw_decode(body, at)
            out.calls.append(_call_from_json(json.dumps(data), "parameters"))
        except (ValueError, json.JSONDecodeError) as err:
            out.errors.append(f"could not parse tool call {body[at : at + 200]!r}: {err}")
            break
        at = end
        while at < len(body) and body[at] in " \n\t;":
            at += 1
    return out


def _harmony(text: str) -> ParsedTurn:
    out = ParsedTurn(_HARMONY.sub("", text).strip())
    for name, body in _HARMONY.findall(text):
        try:
            args = json.loads(body) if body.strip() else {}
            if not isinstance(args, dict):
                raise ValueError("arguments must be a JSON object")
            out.calls.append(ToolCall(name, args))
        except (ValueError, json.JSONDecodeError) as err:
            out.errors.append(f"could not parse the arguments of {name}: {err}")
    return out


PARSERS = {"hermes": _hermes, "llama3_json": _llama3_json, "harmony": _harmony}


def parse_turn(text: str, fmt: str) -> ParsedTurn:
    """The assistant's text split into its reply and the tool calls it made, in format `fmt`."""
    return PARSERS[fmt](text)


def tool_format(model_type: str | None, chat_template: str | None) -> str:
    """The family's tool-call format: the chat template tells first (a llama-architecture model may ship
    a ChatML template, like SmolLM2), then the model type."""
    template = chat_template or ""
    if "<|channel|>" in template or model_type == "gpt_oss":
        return "harmony"
    if "<tool_call>" in template or "im_start" in template:
        return "hermes"
    if "<|python_tag|>" in template or "ipython" in template or model_type == "llama":
        return "llama3_json"
    return "hermes"


def assistant_message(parsed: ParsedTurn) -> dict[str, Any]:
    """The chat message for a parsed turn, tool calls in the transformers / OpenAI shape."""
    message: dict[str, Any] = {"role": "assistant", "content": parsed.content}
    if parsed.calls:
        message["tool_calls"] = [
            {"type": "function", "id": c.id, "function": {"name": c.name, "arguments": c.arguments}}
            for c in parsed.calls
        ]
    return message
