"""gpt-oss (harmony) episodes: rewards and the next prompt see the final channel as the reply's content
and the analysis channel apart, never `analysis...assistantfinal...` text.

The chat template below renders the harmony format as gpt-oss's does where it matters here: the
analysis channel from a message's `thinking`, kept for tool calls and for a final answer that closes
the conversation, dropped from past final answers; `<|return|>` closes the last answer and `<|end|>` a
past one; calls go on the commentary channel to `functions.NAME`, results come back from that name.
(The checkpoint's own template cannot be downloaded here.) The tokenizer is the tiny model's with the
harmony special tokens added; the model is scripted, as the tiny model cannot write harmony.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rltrain.types import SamplingParams
from tests.rollout.scripted import ADD_TOOL, Scripted, make_collector, with_template, write

HARMONY = (
    "{%- if tools -%}<|start|>developer<|message|># Tools\n\n## functions\n\nnamespace functions {\n"
    "{%- for t in tools %}\ntype {{ t.function.name }} = (_: {{ t.function.parameters | tojson }}) => any;"
    "{%- endfor %}\n} // namespace functions<|end|>{%- endif -%}"
    "{%- for m in messages -%}"
    "{%- if m.role in ['system', 'user'] -%}<|start|>{{ m.role }}<|message|>{{ m.content }}<|end|>"
    "{%- elif m.role == 'tool' -%}"
    "<|start|>functions.{{ m.name }} to=assistant<|channel|>commentary<|message|>{{ m.content }}<|end|>"
    "{%- elif m.get('tool_calls') -%}"
    "{%- if m.get('thinking') -%}<|start|>assistant<|channel|>analysis<|message|>{{ m.thinking }}<|end|>"
    "{%- endif -%}"
    "{%- for c in m.tool_calls -%}<|start|>assistant<|channel|>commentary to=functions.{{ c.function.name }}"
    " <|constrain|>json<|message|>{{ c.function.arguments | tojson }}<|call|>{%- endfor -%}"
    "{%- else -%}"
    "{%- set closing = loop.last and not add_generation_prompt -%}"
    "{%- if closing and m.get('thinking') -%}"
    "<|start|>assistant<|channel|>analysis<|message|>{{ m.thinking }}<|end|>{%- endif -%}"
    "<|start|>assistant<|channel|>final<|message|>{{ m.content }}{{ '<|return|>' if closing else '<|end|>' }}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|start|>assistant{%- endif -%}"
)
SPECIALS = ["<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>", "<|constrain|>"]
ENV = """
import rltrain

{add}
def respond(messages, state):
    return [{"role": "user", "content": "And again?"}]

def plain(completion) -> float:
    replies = [m for m in completion if m["role"] == "assistant"] if isinstance(completion, list) else None
    texts = [m["content"] for m in replies] if replies is not None else [completion]
    return float(all(t == "4" for t in texts) and (replies is None or all(m["thinking"] for m in replies)))

def load_environment():
    kind, rows = KIND, [{"question": "What is 2 + 2?"}]
    if kind == "single":
        return rltrain.Environment(rows, [plain])
    if kind == "tools":
        return rltrain.Environment(rows, [plain], tools=[add], max_turns=2)
    return rltrain.Environment(rows, [plain], env_response=respond, max_turns=2)
""".replace("{add}", ADD_TOOL)
ANSWER = (
    "<|channel|>analysis<|message|>Two and two.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>4<|return|>"
)
CALL = (
    "<|channel|>analysis<|message|>Use the tool.<|end|><|start|>assistant"
    '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a": 2, "b": 2}<|call|>'
)


@pytest.fixture(scope="module")
def harmony_tok(tok: Any) -> Any:
    return with_template(tok, HARMONY, SPECIALS)


def _collect(tmp_path: Path, tok: Any, kind: str, reply: Any) -> tuple[Any, Any]:
    path = write(tmp_path, "harmony_env.py", f"KIND = {kind!r}\n{ENV}")
    collector = make_collector(path, Scripted(tok, reply, stop=None), tok, group=1)
    try:
        row = collector.slots[0].env.rows[0]
        (group,) = collector.episodes([(0, row)], 1, SamplingParams(64, seed=1))
        (score,) = collector.score([(0, row)], [group])
        return group[0], score
    finally:
        collector.close()


def test_a_single_turn_reward_sees_the_final_channel(tmp_path: Path, harmony_tok: Any) -> None:
    ep, score = _collect(tmp_path, harmony_tok, "single", lambda context: ANSWER)
    assert ep.text == "4" and score.rewards == [1.0]


def test_the_next_prompt_and_the_rewards_see_final_as_content(tmp_path: Path, harmony_tok: Any) -> None:
    ep, score = _collect(tmp_path, harmony_tok, "respond", lambda context: ANSWER)
    replies = [m for m in ep.messages if m["role"] == "assistant"]
    assert [(m["content"], m["thinking"]) for m in replies] == [("4", "Two and two.")] * 2
    assert score.rewards == [1.0]
    # the past answer as the template renders it (analysis dropped: a split, never misaligned tokens)
    second = harmony_tok.decode(ep.parts[-1].prompt_ids)
    assert ep.splits == 1 and second.endswith(
        "<|start|>assistant<|channel|>final<|message|>4<|end|>"
        "<|start|>user<|message|>And again?<|end|><|start|>assistant"
    )


def test_a_harmony_tool_call_runs_and_its_result_comes_back(tmp_path: Path, harmony_tok: Any) -> None:
    ep, _ = _collect(tmp_path, harmony_tok, "tools", lambda c: ANSWER if "functions.add to=" in c else CALL)
    call, result, answer = ep.messages[-3:]
    assert call["tool_calls"][0]["function"] == {"name": "add", "arguments": {"a": 2, "b": 2}}
    assert call["thinking"] == "Use the tool." and call["content"] == ""
    assert result == {"role": "tool", "name": "add", "content": "4"} and answer["content"] == "4"
    assert "<|start|>functions.add to=assistant<|channel|>commentary<|message|>4<|end|>" in (
        harmony_tok.decode(ep.parts[-1].prompt_ids)
    )
