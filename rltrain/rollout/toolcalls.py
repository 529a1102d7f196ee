"""Tool calls in each model family's own format, parsed out of a sampled assistant turn.

- `hermes`: Qwen3 / Qwen3.5 and ChatML models: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`,
  one block per call.
- `llama3_json`: Llama 3.x: the whole reply is `{"name": ..., "parameters": {...}}` (optionally after
  `<|python_tag|>`; several calls separated by `;`).
- `harmony`: gpt-oss: `<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}<|call|>`.

A call that cannot be parsed is not dropped: it comes back as an error, which the episode sends to the
model as a tool message (and counts), so the model learns the format instead of the run crashing. The
text is the model's: whatever it holds (JSON nested past the parser's recursion limit included) is a
parse error, never an exception.

harmony turns are read by channel whatever the tools: the `final` channel is the reply's content, the
`analysis` channel its `thinking` (the key gpt-oss's template renders), so rewards and the next prompt
never see channel markup as text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("hermes", "llama3_json", "harmony")
_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
# harmony: a message's header (channel, recipient) ends at <|message|>; its body at one of these
_HARMONY_ENDS = ("<|end|>", "<|return|>", "<|call|>", "<|start|>")
_HARMONY_SPECIALS = re.compile(r"<\|[a-z_]+\|>")
_UNPARSABLE = (ValueError, RecursionError)  # json: malformed, or nested deeper than the parser goes


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = ""


@dataclass
class ParsedTurn:
    content: str  # the reply without its tool-call markup
    calls: list[ToolCall] = field(default_factory=list)
    thinking: str | None = None  # harmony's analysis channel, kept apart from the content
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
        except _UNPARSABLE as err:
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
        except _UNPARSABLE as err:
            out.errors.append(f"could not parse tool call {body[at : at + 200]!r}: {err}")
            break
        at = end
        while at < len(body) and body[at] in " \n\t;":
            at += 1
    return out


def _harmony_messages(text: str) -> list[tuple[str, str]]:
    """(header, body) of each harmony message in a sampled turn, by plain string search (linear in the
    text, whatever the model wrote)."""
    pieces = text.split("<|message|>")
    out, header = [], pieces[0]
    for piece in pieces[1:]:
        ends = [at for at in (piece.find(e) for e in _HARMONY_ENDS) if at >= 0]
        cut = min(ends, default=len(piece))
        out.append((header, piece[:cut]))
        header = piece[cut:]
    return out


def _harmony(text: str) -> ParsedTurn:
    messages = _harmony_messages(text)
    if not messages:  # no channel at all: the text without special tokens is the reply
        return ParsedTurn(_HARMONY_SPECIALS.sub("", text).strip())
    out, content, thinking = ParsedTurn(""), [], []
    for header, body in messages:
        channel = re.search(r"<\|channel\|>\s*(\w+)", header)
        recipient = re.search(r"to=([\w.\-]+)", header)
        if recipient is not None and recipient.group(1).startswith("functions."):
            name = recipient.group(1).removeprefix("functions.")
            try:
                args = json.loads(body) if body.strip() else {}
                if not isinstance(args, dict):
                    raise ValueError("arguments must be a JSON object")
                out.calls.append(ToolCall(name, args))
            except _UNPARSABLE as err:
                out.errors.append(f"could not parse the arguments of {name[:100]}: {err}")
        elif recipient is not None:
            out.errors.append(f"no tool {recipient.group(1)[:100]!r}: call tools as functions.NAME")
        elif channel is not None and channel.group(1) == "analysis":
            thinking.append(body.strip())
        else:  # final, or a commentary preamble to the user
            content.append(body.strip())
    out.content = "\n".join(c for c in content if c)
    out.thinking = "\n".join(thinking) if thinking else None
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
    if parsed.thinking is not None:
        message["thinking"] = parsed.thinking
    if parsed.calls:
        message["tool_calls"] = [
            {"type": "function", "id": c.id, "function": {"name": c.name, "arguments": c.arguments}}
            for c in parsed.calls
        ]
    return message
