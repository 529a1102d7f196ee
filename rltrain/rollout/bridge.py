"""Token-exact multi-turn episodes: each turn extends the ids already sampled with only the tokens of
the new messages; past turns are never re-tokenized from text.

Re-tokenizing decoded text is not canonical (the sampler may have produced `a`+`b` where the tokenizer
would write `ab`), and some templates rewrite history (Qwen3 drops past `<think>` blocks; harmony
turns a final `<|return|>` into `<|end|>`). So after an assistant turn the next prompt is: the exact
ids so far, the template's end-of-turn glue the sampler did not produce, and the new messages as the
template renders them. That is only right when the template is append-only for this history; when it
is not, the episode continues as a new sample from the full re-render (a "split"), never from
misaligned tokens.
"""

from __future__ import annotations

import json
from typing import Any

PROBE = "RLTRAIN-PROBE-7f3a"  # a marker that no template alters: finds the text after an assistant turn
TOOL_NOTE = (
    'You may call these tools. To call one, reply with <tool_call>{{"name": NAME, "arguments": '
    "{{...}}}}</tool_call>; its result comes back in the next message.\n<tools>\n{tools}\n</tools>"
)


class RenderFailed(Exception):
    """The chat template refused a conversation; `by`: whose message it refused ("model": the assistant
    turn just sampled, "environment": the messages it answered with)."""

    def __init__(self, by: str, err: Exception) -> None:
        super().__init__(f"the chat template refused the {by}'s message: {type(err).__name__}: {err}")
        self.by = by


class ChatBridge:
    """Renders prompts and extends episodes for one tokenizer, template switches and tool set."""

    def __init__(
        self, tokenizer: Any, template_kwargs: dict[str, Any], tools: list[dict[str, Any]] | None
    ) -> None:
        from rltrain.rollout.toolcalls import tool_format

        self.tok = tokenizer
        self.kwargs = template_kwargs
        self.tools = tools or None
        self.tool_format = tool_format(None, getattr(tokenizer, "chat_template", None))
        probe = [{"role": "user", "content": "x"}]
        # a template that ignores `tools=` (plain ChatML, SmolLM2): describe them in the system message
        self.tool_note = None
        if self.tools and self._render(probe, True, self.tools) == self._render(probe, True, None):
            self.tool_note = TOOL_NOTE.format(tools="\n".join(json.dumps(t) for t in self.tools))
        closed = self.render([*probe, {"role": "assistant", "content": PROBE}], generation_prompt=False)
        at = closed.rfind(PROBE)
        self.turn_close = closed[at + len(PROBE) :] if at >= 0 else None  # e.g. "<|im_end|>\n"

    def _render(self, messages: list[dict[str, Any]], generation_prompt: bool, tools: Any) -> str:
        text = self.tok.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=generation_prompt, **self.kwargs
        )
        return str(text)

    def render(self, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
        if self.tool_note is not None:
            if messages and messages[0].get("role") == "system":
                first = {**messages[0], "content": f"{messages[0]['content']}\n\n{self.tool_note}"}
                messages = [first, *messages[1:]]
            else:
                messages = [{"role": "system", "content": self.tool_note}, *messages]
            return self._render(messages, generation_prompt, None)
        return self._render(messages, generation_prompt, self.tools)

    def ids(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def encode(self, messages: list[dict[str, Any]]) -> list[int]:
        """The whole conversation, ready for the next assistant turn (a prompt, or a split's re-render)."""
        return self.ids(self.render(messages, generation_prompt=True))

    def extend(
        self, history: list[dict[str, Any]], new: list[dict[str, Any]], stop_id: int | None
    ) -> list[int] | None:
        """The ids to append after the assistant turn that ends `history`, for the `new` messages and the
        next assistant turn's header; None when the template re-renders history (split the episode).

        `stop_id`: the token that ended the sampled turn (None: it ran out of tokens, so the turn's
        closing tokens are appended unsampled).
        """
        if self.turn_close is None:
            return None
        try:  # history rendered before this turn: only the turn just sampled can be refused
            before = self.render(history, generation_prompt=False)
        except Exception as err:  # jinja's TemplateError, or whatever a template's code raises
            raise RenderFailed("model", err) from err
        try:
            after = self.render([*history, *new], generation_prompt=True)
        except Exception as err:
            raise RenderFailed("environment", err) from err
        if not after.startswith(before):
            return None
        close = self.turn_close
        if stop_id is not None:
            stop_text = self.tok.decode([stop_id], skip_special_tokens=False)
            if not close.startswith(stop_text):
                return None  # the template closes turns with another token than the one sampled
            close = close[len(stop_text) :]
        return self.ids(close + after[len(before) :])
