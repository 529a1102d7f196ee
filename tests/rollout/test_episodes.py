"""Multi-turn episodes, token-exact: sampled ids are never re-tokenized, environment tokens are masked,
a template that rewrites history splits the episode, and tool calls loop through the real template.

The model here is a scripted stand-in (tests/rollout/scripted.py): the tiny model cannot write a tool
call, and a split needs a reply with a <think> block. Everything else is real.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from rltrain.types import Completion, Group, Request, SamplingParams
from tests.rollout.scripted import THINK_DROPPING, Scripted, write

ROOT = Path(__file__).resolve().parents[2]
AGAIN = """
import rltrain

def again(messages, state):
    return [{"role": "user", "content": "again"}]

def turns(completion) -> float:
    return float(sum(m["role"] == "assistant" for m in completion))

def load_environment():
    return rltrain.Environment([{"question": "count"}], [turns], env_response=again, max_turns=3)
"""


def test_turns_extend_the_sampled_ids_exactly(tmp_path: Path, tok: Any, collector_for: Callable) -> None:
    model = Scripted(tok, lambda context: "12 34", chars=True)
    # a window longer than any env_response, however loaded the machine: the batching asserted below
    # must not depend on the workers' timing
    collector = collector_for(write(tmp_path, "again_env.py", AGAIN), model, batch_window_s=5)
    (group,) = collector.episodes([(0, collector.slots[0].env.rows[0])], 2, SamplingParams(16, seed=1))
    ep = group[0]
    assert ep.turns == 3 and ep.finish == "max_turns" and len(ep.parts) == 1 and ep.splits == 0
    part = ep.parts[0]
    reply = model._ids("12 34") + [tok.convert_tokens_to_ids("<|im_end|>")]
    sampled = [t for t, m in zip(part.ids, part.mask, strict=True) if m]
    assert sampled == reply * 3  # every sampled token kept as sampled (one per character: non-canonical)
    assert [lp for lp, m in zip(part.logprobs, part.mask, strict=True) if not m] == [0.0] * (
        len(part.ids) - len(sampled)
    )
    # the environment's tokens are exactly the template's text for its messages
    text = tok.decode(part.prompt_ids + part.ids)
    # (but the closing newline after the last turn: the episode ends on its sampled <|im_end|>)
    assert text + "\n" == tok.apply_chat_template([*ep.messages], tokenize=False)
    assert tok(text, add_special_tokens=False)["input_ids"] != part.prompt_ids + part.ids  # not re-tokenized
    assert ep.input_tokens == len(part.prompt_ids) + len(part.ids) - len(sampled) and ep.output_tokens == len(
        sampled
    )
    assert model.batches == [1, 2, 2]  # turn 0 once per group; later turns of both episodes batched together


def test_a_template_that_rewrites_history_splits_the_episode(
    tmp_path: Path, tok: Any, collector_for: Callable
) -> None:
    model = Scripted(tok, lambda context: "<think>hmm</think>7")
    collector = collector_for(write(tmp_path, "again_env.py", AGAIN), model, template=THINK_DROPPING)
    (group,) = collector.episodes([(0, collector.slots[0].env.rows[0])], 1, SamplingParams(16, seed=1))
    ep = group[0]
    assert ep.turns == 3 and ep.splits == 2 and len(ep.parts) == 3
    for part in ep.parts:  # each sample: a prompt as the template renders it, then one sampled turn
        assert part.mask == [1] * len(part.ids)
        rendered = collector.encoder.tokenizer.decode(part.prompt_ids)
        assert "<think>" not in rendered  # the re-render dropped past thoughts: nothing misaligned is trained
    assert ep.input_tokens == sum(len(p.prompt_ids) for p in ep.parts)


def test_tool_call_parse_call_result_next_turn(tok: Any, collector_for: Callable) -> None:
    def model(context: str) -> str:
        result = re.findall(r"<tool_response>\n(\d+)\n</tool_response>", context)
        if result:
            return f"The product is {result[-1]}."
        a, b = re.findall(r"What is (\d+) \* (\d+)\?", context)[-1]
        return f'<tool_call>\n{{"name": "multiply", "arguments": {{"a": {a}, "b": {b}}}}}\n</tool_call>'

    collector = collector_for(str(ROOT / "environments" / "calculator.py"), Scripted(tok, model))
    row = collector.slots[0].env.rows[0]
    (group,) = collector.episodes([(0, row)], 1, SamplingParams(64, seed=1))
    ep = group[0]
    roles = [m["role"] for m in ep.messages[len(row.prompt) :]]
    assert roles == ["assistant", "tool", "assistant"] and ep.tool_calls == 1 and ep.tool_errors == 0
    assert ep.messages[-2]["content"] == row.answer  # the tool computed the product in a worker
    assert ep.messages[-3]["tool_calls"][0]["function"]["name"] == "multiply"
    assert "<tools>" in tok.decode(ep.parts[0].prompt_ids)  # the template showed the model its tools
    (score,) = collector.score([(0, row)], [group])
    assert score.rewards == [pytest.approx(1.1)]  # exact product + the tool bonus


def test_a_failing_tool_is_an_error_message_to_the_model(tok: Any, collector_for: Callable) -> None:
    replies = iter(
        [
            '<tool_call>{"name": "multiply", "arguments": {"a": "x", "b": 2}}</tool_call>',
            '<tool_call>{"name": "nope", "arguments": {}}</tool_call>',
            "<tool_call>{bad json</tool_call>",
        ]
    )
    collector = collector_for(
        str(ROOT / "environments" / "calculator.py"), Scripted(tok, lambda c: next(replies))
    )
    (group,) = collector.episodes([(0, collector.slots[0].env.rows[0])], 1, SamplingParams(64, seed=1))
    ep = group[0]
    errors = [m["content"] for m in ep.messages if m["role"] == "tool"]
    assert len(errors) == 2 and ep.tool_errors == 3 and ep.tool_calls == 2 and ep.turns == 3
    assert "ValueError" in errors[0] and "KeyError" in errors[1]  # the worker's exception, as text


def test_a_sample_is_as_old_as_its_oldest_turn(tmp_path: Path, tok: Any, collector_for: Callable) -> None:
    """Engines that label tokens with their weight version (vLLM): the sample takes its oldest turn's."""
    by_turn = {1: 7, 2: 6, 3: 8}  # the second turn came from older weights

    class Stamped(Scripted):
        def sample(self, requests: Sequence[Request], sampling: SamplingParams) -> list[Group]:
            groups = super().sample(requests, sampling)
            for g in groups:
                turn = self.tok.decode(g.prompt_ids).count("<|im_start|>assistant")
                g.completions = [
                    Completion(c.token_ids, c.logprobs, c.text, "stop", by_turn[turn]) for c in g.completions
                ]
            return groups

    collector = collector_for(write(tmp_path, "again_env.py", AGAIN), Stamped(tok, lambda context: "12"))
    out = collector.collect([(0, collector.slots[0].env.rows[0])], SamplingParams(16, seed=1))
    assert [s.version for s in out.samples] == [6, 6]  # not the backend's own 0
