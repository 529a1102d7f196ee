"""End to end with the real vLLM CPU engine: the adapter hot-loads every step and the reward rises."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from rltrain.config import parse_config
from rltrain.record import load_schema, read_jsonl
from rltrain.run import train

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm


def test_vllm_run_learns_with_landed_adapters(run_config, tmp_path: Path) -> None:
    cfg = parse_config(
        run_config(
            max_steps=10,
            batch_size=32,
            sampling={"max_tokens": 24},
            rollout={"backend": "vllm", "landed_check_interval": 4},
        )
    )
    session = train(cfg)
    record = json.loads((session.run_dir / "run.json").read_text())
    jsonschema.validate(record, load_schema())
    assert record["status"] == "succeeded"
    rows = read_jsonl(session.run_dir / "metrics.jsonl")
    rewards = [r["reward_mean"] for r in rows]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.15, rewards
    # the landed check ran on the first sync (a loud probe adapter) and every 4 steps: vLLM matched
    assert rows[0]["landed_probe_diff"] < 1e-3 and rows[0]["landed_probe_ratio"] < 1e-2
    checked = [r["landed_diff"] for r in rows if "landed_diff" in r]
    assert len(checked) == 2 and max(checked) < 1e-3, checked
    # vLLM sampled with the adapter of the previous step: trainer/inference mismatch stays tiny
    assert max(r["mismatch_kl"] for r in rows) < 1e-4
    assert all(r["vllm/adapter_load_s"] >= 0 for r in rows) and rows[0]["vllm/startup_s"] > 0
    live = list((session.run_dir / "adapters" / "live").glob("v*"))
    assert [p.name for p in live] == ["v11"]  # one version kept: the last one loaded
