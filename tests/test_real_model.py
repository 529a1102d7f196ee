"""A real pretrained model (SmolLM2-135M-Instruct, from PyPI as GGUF, converted once) trains with no
sizing knob on both backends, the engine follows the trainer's adapter on it, and it plays a
multi-turn game. Its learning run is slow (minutes) and lives in the `slow` suite."""

from __future__ import annotations

import pytest

from rltrain.config import parse_config
from rltrain.record import read_jsonl
from rltrain.run import train
from tests.helpers import valid_record


def _real(run_config, **overrides: object) -> object:
    base = dict(
        model="builtin:smollm2",
        batch_size=8,
        rollouts_per_example=8,
        learning_rate=2e-4,
        sampling={"max_tokens": 12},
        env=[{"id": "reverse-text"}],
    )
    return parse_config(run_config(**(base | overrides)))


@pytest.mark.parametrize("backend", ["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_smollm2_trains_without_sizing_knobs(run_config, backend: str) -> None:
    if backend == "vllm":
        pytest.importorskip("vllm")
    cfg = _real(run_config, max_steps=2, rollout={"backend": backend, "landed_check_interval": 1})
    assert cfg.rollout.max_model_len is None and cfg.rollout.cpu_kv_cache_gib is None
    run = train(cfg)
    record = valid_record(run.run_dir)
    assert record["status"] == "succeeded", record.get("error")
    rows = read_jsonl(run.run_dir / "metrics.jsonl")
    assert all(r["grad_norm"] > 0 and r["output_tokens"] > 0 for r in rows)
    if backend == "vllm":  # the real model in fp32: vLLM applies the trainer's adapter, token for token
        assert all(r["landed_diff"] < 1e-3 for r in rows), [r["landed_diff"] for r in rows]
        assert max(abs(r["mismatch_kl"]) for r in rows) < 1e-3


def test_smollm2_plays_a_multi_turn_game(run_config) -> None:
    cfg = _real(run_config, max_steps=1, env=[{"id": "guess-number"}], sampling={"max_tokens": 8})
    run = train(cfg)
    assert valid_record(run.run_dir)["status"] == "succeeded"
    (row,) = read_jsonl(run.run_dir / "metrics.jsonl")
    assert row["turns_mean"] >= 1.0 and row["splits"] == 0.0


@pytest.mark.slow
def test_smollm2_visibly_learns_the_real_model_demo(run_config, tmp_path) -> None:
    """configs/smollm2.toml, shortened: capital letters from ~0.02 to well above in a few minutes."""
    from rltrain.config import load_config

    cfg = load_config(
        "configs/smollm2.toml", ["--max_steps", "14", "--run.output_dir", str(tmp_path / "runs")]
    )
    run = train(cfg)
    rewards = [r["reward_mean"] for r in read_jsonl(run.run_dir / "metrics.jsonl")]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.3, rewards
