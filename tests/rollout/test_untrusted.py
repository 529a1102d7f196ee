"""Untrusted input in multi-turn episodes: whatever the model writes, a tool returns or an environment
raises costs at most its own episode, never the step; nothing outgrows the context; an episode that
failed outside the model is recorded but not trained on. The model is scripted (tests/rollout/scripted.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rltrain.orchestrator.metrics import rollout_metrics
from rltrain.types import Group, Request, SamplingParams
from tests.rollout.scripted import ADD_TOOL, THINK_DROPPING, Scripted, write

TOOLS = """
import os, subprocess, time
import rltrain

def flood() -> str:
    \"\"\"Floods.\"\"\"
    return "word " * 200000

{add}
def turns(completion, state) -> float:
    return float(state["turn"])

def load_environment():
    return rltrain.Environment([{"question": "go"}], [turns], tools=[flood, add], max_turns=3)
""".replace("{add}", ADD_TOOL)
SAYS = """
import time
import rltrain

CONTENT = {content}

def respond(messages, state):
    {before}
    return [{{"role": "user", "content": CONTENT}}]

def turns(completion, state) -> float:
    return float(state["turn"])

def load_environment():
    rows = [{{"question": "go"}}, {{"question": "stop"}}]
    return rltrain.Environment(rows, [turns], env_response=respond, max_turns={turns})
"""
# ChatML that refuses several tool calls in one message, as Llama 3.1's template does, and non-string
# content, as templates that expect text do
STRICT = (
    "{% for m in messages %}"
    "{% if m.get('tool_calls') and m['tool_calls'] | length > 1 %}"
    "{{ raise_exception('This model only supports single tool-calls at once!') }}{% endif %}"
    "{% if m['content'] is not string %}{{ raise_exception('content must be text') }}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _says(tmp_path: Path, content: str = '"again"', before: str = "pass", turns: int = 3) -> str:
    return write(tmp_path, "says.py", SAYS.format(content=content, before=before, turns=turns))


def _call(name: str, **args: Any) -> str:
    import json

    return f"<tool_call>{json.dumps({'name': name, 'arguments': args})}</tool_call>"


def test_tool_output_is_capped_and_the_context_checked_before_appending(
    tmp_path: Path, tok: Any, collector_for: Callable
) -> None:
    env = write(tmp_path, "tools.py", TOOLS)
    model = Scripted(tok, lambda context: _call("flood"))
    small = collector_for(env, model, max_context=1024)
    out = small.collect([(0, small.slots[0].env.rows[0])], SamplingParams(16, seed=1))
    assert out.samples and all(s.num_tokens <= 1024 for s in out.samples)  # 200,000 words never appended
    assert all(r["finish"] == "context" for r in out.records)
    assert sum(len(str(m)) for r in out.records for m in r["messages"]) < 10_000  # nor recorded
    capped = collector_for(env, model, max_context=100_000, max_env_chars=100)
    (group,) = capped.episodes([(0, capped.slots[0].env.rows[0])], 1, SamplingParams(16, seed=1))
    tool = [m["content"] for m in group[0].messages if m["role"] == "tool"]
    assert tool and all(t.startswith("word " * 20) and "999900 more characters cut" in t for t in tool)


def test_a_split_followed_by_the_context_stop_leaves_no_empty_sample(
    tmp_path: Path, tok: Any, collector_for: Callable
) -> None:
    env = _says(tmp_path, content='"x " * 300')
    model = Scripted(tok, lambda context: "<think>hmm</think>7")
    collector = collector_for(env, model, template=THINK_DROPPING, max_context=400)
    out = collector.collect([(0, collector.slots[0].env.rows[0])], SamplingParams(16, seed=1))
    assert [r["finish"] for r in out.records] == ["context", "context"]
    assert out.samples and all(s.completion_ids and any(s.loss_mask) for s in out.samples)
    assert all(s.num_tokens <= 400 for s in out.samples)


def test_a_template_refusing_the_models_turn_costs_that_episode_only(
    tmp_path: Path, tok: Any, collector_for: Callable
) -> None:
    """Two calls where the template takes one: the model's error (scored, trained); the step goes on."""
    env = write(tmp_path, "tools.py", TOOLS)
    model = Scripted(tok, lambda context: _call("add", a=1, b=2) + _call("add", a=3, b=4))
    collector = collector_for(env, model, template=STRICT)
    out = collector.collect([(0, collector.slots[0].env.rows[0])], SamplingParams(32, seed=1))
    assert [r["finish"] for r in out.records] == ["error", "error"]
    assert "only supports single tool-calls" in out.records[0]["error"]
    assert not any(r.get("excluded") for r in out.records) and out.errored["e"] == 2
    assert len(out.samples) == 2  # the model wrote it: trained, with error_reward


def test_a_template_refusing_the_environments_messages_is_not_trained(
    tmp_path: Path, tok: Any, collector_for: Callable
) -> None:
    env = _says(tmp_path, content='{"not": "text"}')
    collector = collector_for(env, Scripted(tok, lambda context: "7"), template=STRICT)
    rows = collector.slots[0].env.rows
    out = collector.collect([(0, rows[0]), (0, rows[1])], SamplingParams(16, seed=1))
    assert all(r["finish"] == "error" and r["excluded"] for r in out.records)
    assert "environment's message" in out.records[0]["error"] and not out.samples
    assert rollout_metrics(out.records, out.errored, 0)["excluded_episodes"] == 4.0


def test_env_crash_and_engine_failure_are_recorded_not_trained(
    tmp_path: Path, tok: Any, collector_for: Callable
) -> None:
    env = _says(tmp_path, before='if messages[0]["content"] == "stop": raise RuntimeError("env bug")')

    class FailsLater(Scripted):
        def sample(self, requests: Sequence[Request], sampling: SamplingParams) -> list[Group]:
            if any(self.tok.decode(r.prompt_ids).count("assistant") == 3 for r in requests):
                raise RuntimeError("engine lost")  # every third turn's batch
            return super().sample(requests, sampling)

    collector = collector_for(env, FailsLater(tok, lambda context: "7"))
    rows = collector.slots[0].env.rows
    out = collector.collect([(0, rows[0]), (0, rows[1])], SamplingParams(16, seed=1))
    errors = [r["error"] for r in out.records]
    assert all(r["excluded"] for r in out.records) and not out.samples
    assert "engine: RuntimeError: engine lost" in errors[0] and "env bug" in errors[2]


def test_state_turn_is_the_assistant_turns_taken(tmp_path: Path, tok: Any, collector_for: Callable) -> None:
    said = collector_for(_says(tmp_path), Scripted(tok, lambda context: "7"))
    row = said.slots[0].env.rows[0]
    assert said.collect([(0, row)], SamplingParams(16, seed=1)).records[0]["reward"] == 3.0
    tools = collector_for(write(tmp_path, "tools.py", TOOLS), Scripted(tok, lambda c: _call("add", a=1, b=2)))
    out = tools.collect([(0, tools.slots[0].env.rows[0])], SamplingParams(32, seed=1))
    assert [r["turns"] for r in out.records] == [3, 3] and out.records[0]["reward"] == 3.0


def test_a_turn_cut_by_its_token_limit_keeps_the_episode_truncated(
    tmp_path: Path, tok: Any, collector_for: Callable
) -> None:
    cut = collector_for(_says(tmp_path, turns=2), Scripted(tok, lambda context: "7 7 7", finish="length"))
    out = cut.collect([(0, cut.slots[0].env.rows[0])], SamplingParams(16, seed=1))
    assert all(r["finish"] == "length" and r["truncated"] for r in out.records)
    assert rollout_metrics(out.records, out.errored, 0)["truncated_frac"] == 1.0


def test_a_turn_closed_by_another_token_than_the_templates_splits(
    tmp_path: Path, tok: Any, collector_for: Callable
) -> None:
    """The sampler stopped on <|endoftext|>, the template closes turns with <|im_end|>: appending the
    template's glue after the sampled stop would train misaligned tokens, so the episode splits."""
    model = Scripted(tok, lambda context: "7", stop="<|endoftext|>")
    collector = collector_for(_says(tmp_path), model)
    (group,) = collector.episodes([(0, collector.slots[0].env.rows[0])], 1, SamplingParams(16, seed=1))
    ep = group[0]
    assert ep.turns == 3 and ep.splits == 2 and len(ep.parts) == 3
    for part in ep.parts:  # each sample: a prompt the template rendered, then one sampled turn
        assert part.mask == [1] * len(part.ids) and part.ids[-1] == tok.convert_tokens_to_ids("<|endoftext|>")


def test_an_episode_past_its_timeout_ends_and_is_not_trained(
    tmp_path: Path, tok: Any, collector_for: Callable
) -> None:
    env = _says(tmp_path, before="time.sleep(4)")
    collector = collector_for(env, Scripted(tok, lambda context: "7"), episode_timeout_s=0.5)
    out = collector.collect([(0, collector.slots[0].env.rows[0])], SamplingParams(16, seed=1))
    assert all(r["finish"] == "timeout" and r["excluded"] for r in out.records) and not out.samples
    assert out.records[0]["error"] == "episode timed out after 0.5s"
