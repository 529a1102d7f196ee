"""Tool calls parsed in each family's own format; a malformed call is an error for the model, not a crash."""

from __future__ import annotations

from rltrain.rollout.toolcalls import assistant_message, parse_turn, tool_format


def test_hermes_calls_and_content() -> None:
    text = 'Let me compute.\n<tool_call>\n{"name": "multiply", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
    parsed = parse_turn(text, "hermes")
    assert parsed.content == "Let me compute."
    assert [(c.name, c.arguments) for c in parsed.calls] == [("multiply", {"a": 2, "b": 3})]
    g = '<tool_call>{"name": "g", "arguments": "{\\"x\\": 1}"}</tool_call>'
    two = parse_turn(
        '<tool_call>{"name": "f", "arguments": {}}</tool_call>' + g,
        "hermes",
    )
    assert [(c.name, c.arguments) for c in two.calls] == [
        ("f", {}),
        ("g", {"x": 1}),
    ]  # double-encoded args too
    assert parse_turn("just an answer: 42", "hermes").calls == []


def test_malformed_calls_become_errors() -> None:
    bad = parse_turn('<tool_call>{"name": multiply, "arguments": {}}</tool_call>', "hermes")
    assert bad.calls == [] and len(bad.errors) == 1 and "could not parse" in bad.errors[0]
    unclosed = parse_turn('<tool_call>{"name": "f", "arguments": {"a": 1}}', "hermes")  # ran out of tokens
    assert [c.name for c in unclosed.calls] == ["f"]
    no_name = parse_turn('<tool_call>{"arguments": {}}</tool_call>', "hermes")
    assert no_name.errors and not no_name.calls


def test_llama3_json_calls() -> None:
    parsed = parse_turn('<|python_tag|>{"name": "multiply", "parameters": {"a": 2, "b": 3}}', "llama3_json")
    assert [(c.name, c.arguments) for c in parsed.calls] == [("multiply", {"a": 2, "b": 3})]
    both = parse_turn('{"name": "f", "parameters": {"a": 1}}; {"name": "g", "parameters": {}}', "llama3_json")
    assert [c.name for c in both.calls] == ["f", "g"]
    assert parse_turn("The answer is 6.", "llama3_json").content == "The answer is 6."


def test_harmony_calls() -> None:
    text = (
        "<|channel|>analysis<|message|>I need the tool.<|end|><|start|>assistant"
        '<|channel|>commentary to=functions.multiply <|constrain|>json<|message|>{"a": 2, "b": 3}<|call|>'
    )
    parsed = parse_turn(text, "harmony")
    assert [(c.name, c.arguments) for c in parsed.calls] == [("multiply", {"a": 2, "b": 3})]
    broken = parse_turn("<|channel|>commentary to=functions.f <|message|>{oops<|call|>", "harmony")
    assert broken.errors and not broken.calls


def test_format_by_template_then_family() -> None:
    assert tool_format(None, "...<tool_call>...") == "hermes"
    assert tool_format("llama", "{{ bos_token }}<|start_header_id|>ipython") == "llama3_json"
    assert tool_format("llama", "<|im_start|>{{ role }}") == "hermes"  # SmolLM2: llama weights, ChatML
    assert tool_format("gpt_oss", None) == "harmony"


def test_assistant_message_shape() -> None:
    message = assistant_message(
        parse_turn('<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>', "hermes")
    )
    assert message == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "id": "", "function": {"name": "f", "arguments": {"x": 1}}}],
    }


def test_calls_nested_past_the_parsers_recursion_limit_are_errors_not_crashes() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    texts = {
        "hermes": f'<tool_call>{{"name": "f", "arguments": {{"x": {deep}}}}}</tool_call>',
        "llama3_json": f'{{"name": "f", "parameters": {{"x": {deep}}}}}',
        "harmony": f"<|channel|>commentary to=functions.f <|constrain|>json<|message|>{deep}<|call|>",
    }
    for fmt, text in texts.items():
        parsed = parse_turn(text, fmt)
        assert not parsed.calls and len(parsed.errors) == 1, fmt
        assert "recursion" in parsed.errors[0], fmt


def test_harmony_turns_are_read_by_channel() -> None:
    """The final channel is the content, the analysis channel is kept apart as `thinking`."""
    text = (
        "<|channel|>analysis<|message|>Two and two.<|end|><|start|>assistant"
        "<|channel|>final<|message|>4<|return|>"
    )
    parsed = parse_turn(text, "harmony")
    assert (parsed.content, parsed.thinking, parsed.calls) == ("4", "Two and two.", [])
    assert assistant_message(parsed) == {"role": "assistant", "content": "4", "thinking": "Two and two."}
    cut = parse_turn("<|channel|>analysis<|message|>Still thinking", "harmony")  # ran out of tokens
    assert (cut.content, cut.thinking) == ("", "Still thinking")
    bare = parse_turn("no channels at all<|return|>", "harmony")
    assert (bare.content, bare.thinking) == ("no channels at all", None)
    builtin = parse_turn("<|channel|>commentary to=python <|message|>import os<|call|>", "harmony")
    assert builtin.errors and not builtin.calls  # only functions.* are the environment's tools
