"""A short real run on the tiny Qwen3.5 (Gated DeltaNet + attention) learns the demo environment.

On CPU Qwen3.5 samples with the hf backend (vLLM-CPU cannot serve it: rltrain.families); the reward
starts low (its tokenizer splits digits one by one, so few characters are digits) and rises steadily.
"""

from __future__ import annotations

from typing import Any

from rltrain.config import parse_config
from rltrain.record import read_jsonl
from rltrain.run import train


def test_tiny_qwen3_5_learns_digits(run_config: Any) -> None:
    overrides = dict(max_steps=10, batch_size=32, learning_rate=2e-2, rollout={"backend": "hf"})
    cfg = parse_config(run_config(model="builtin:tiny-qwen3.5", **overrides))
    session = train(cfg)
    assert session.record.status == "succeeded"
    rows = read_jsonl(session.run_dir / "metrics.jsonl")
    rewards = [r["reward_mean"] for r in rows]
    assert len(rewards) == 10
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.03, rewards
    assert all(r["mismatch_kl"] < 1e-4 for r in rows)  # the hf backend samples on-policy
