"""The engine sized from the run's data: context from the longest prompt, seq_len filtering with a
count, a clear error for a prompt that cannot fit, and the CPU KV cache for the in-flight sequences."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from rltrain.config import parse_config
from rltrain.orchestrator.sizing import kv_bytes_per_token, kv_cache_tokens
from rltrain.orchestrator.spec import resolve
from rltrain.record import read_jsonl
from rltrain.run import train

VARIED = """
import rltrain

def one(completion: str) -> float:
    return 1.0

def load_environment():
    rows = [{"question": "word " * n} for n in (2, 4, 8, 16, 200, 400)]
    return rltrain.Environment(rows, [one])
"""


def _cfg(run_config, tmp_path: Path, **overrides: object) -> object:
    env = tmp_path / "varied.py"
    env.write_text(VARIED)
    return parse_config(run_config(env=[{"id": str(env)}], **overrides))


def test_context_is_the_longest_prompt_plus_the_budget(run_config) -> None:
    cfg = parse_config(run_config(sampling={"max_tokens": 16}))
    sizing = resolve(cfg).sizing
    assert sizing.max_model_len == 64 and sizing.dropped == {}  # digits prompts: < 48 tokens, + 16, rounded
    multi = parse_config(run_config(env=[{"id": "guess-number"}], sampling={"max_tokens": 16}))
    assert resolve(multi).sizing.max_model_len >= 5 * 16  # 3 turns and 2 answers between
    pinned = parse_config(run_config(rollout={"max_model_len": 1000}))
    assert resolve(pinned).sizing.max_model_len == 1000  # an explicit setting wins


def test_seq_len_drops_long_prompts_with_a_count_and_the_run_goes_on(run_config, tmp_path: Path) -> None:
    cfg = _cfg(run_config, tmp_path, seq_len=120, max_steps=1, sampling={"max_tokens": 16})
    spec = resolve(cfg)
    sizing = spec.sizing
    assert (
        sizing.dropped == {"varied": 2} and len(spec.slots[0].env.rows) == 4 and sizing.max_model_len <= 120
    )
    run = train(cfg)
    assert run.record.status == "succeeded" and len(read_jsonl(run.run_dir / "metrics.jsonl")) == 1


def test_a_prompt_that_cannot_fit_names_the_row_and_the_numbers(run_config, tmp_path: Path) -> None:
    cfg = _cfg(run_config, tmp_path, rollout={"max_model_len": 256}, sampling={"max_tokens": 16})
    with pytest.raises(
        ValueError,
        match=r"environment varied, row 5: its prompt has \d+ tokens; .* over the model's context of 256",
    ):
        resolve(cfg)
    with pytest.raises(ValueError, match="every prompt of environment varied is longer"):
        resolve(_cfg(run_config, tmp_path, seq_len=8))


def test_kv_cache_bytes_per_token() -> None:
    smollm2 = SimpleNamespace(num_hidden_layers=30, num_key_value_heads=3, head_dim=64, num_attention_heads=9)
    assert kv_bytes_per_token(smollm2, dtype_bytes=4) == 2 * 30 * 3 * 64 * 4  # 46,080 bytes: K and V, fp32
    hybrid = SimpleNamespace(
        num_hidden_layers=4, num_key_value_heads=2, head_dim=64, num_attention_heads=4,
        layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
    )  # fmt: skip
    assert kv_bytes_per_token(hybrid, dtype_bytes=2) == 2 * 1 * 2 * 64 * 2  # only attention layers cache K/V


def test_the_cpu_kv_cache_holds_every_rollout_in_whole_blocks(run_config) -> None:
    """vLLM gives each sequence whole 128-token blocks and keeps block 0 empty: sized per token, a
    64-token context held 17 of 32 rollouts, and the step sampled in two waves (issue 29)."""
    assert kv_cache_tokens(32, 64) == (32 + 1) * 128
    assert kv_cache_tokens(32, 200) == (2 * 32 + 1) * 128  # two blocks per sequence
    cfg = parse_config(run_config(batch_size=32, sampling={"max_tokens": 24}, rollout={"backend": "vllm"}))
    sizing = resolve(cfg).sizing
    tiny = SimpleNamespace(num_hidden_layers=2, num_key_value_heads=2, head_dim=64, num_attention_heads=4)
    blocks = sizing.kv_cache_bytes // (128 * kv_bytes_per_token(tiny, dtype_bytes=4))
    assert sizing.max_model_len == 64 and blocks - 1 >= 32
