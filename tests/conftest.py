"""Shared fixtures: the tiny model (built once per machine, cached) and small run configs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("RLTRAIN_CACHE", str(REPO / ".cache"))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread is fastest and deterministic


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from rltrain.tiny import tiny_model_path

    return str(tiny_model_path("qwen3"))


@pytest.fixture
def run_config(tmp_path: Path) -> Any:
    """Factory: a small demo-environment run on the tiny model, as a raw config dict (a__b=v sets a.b)."""
    return lambda **overrides: make_run_config(tmp_path, **overrides)


def make_run_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "model": "builtin:tiny",
        "max_steps": 4,
        "batch_size": 16,
        "rollouts_per_example": 8,
        "learning_rate": 1e-2,
        "sampling": {"max_tokens": 16},
        "env": [{"id": "digits"}],
        "lora": {"rank": 16, "alpha": 32},
        "algorithm": {"variant": "dapo"},  # it learns digits reliably at this learning rate, serially
        "max_async_level": 0,  # the serial loop (tests of sampling ahead set it: tests/test_async.py)
        "rollout": {"backend": "hf"},
        "run": {"output_dir": str(tmp_path / "runs"), "progress": False, "tensorboard": False, "seed": 0},
    }
    for key, value in overrides.items():
        node = cfg
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return cfg
