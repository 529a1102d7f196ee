"""GPU-only checks (marked `gpu`, never run in CI): the same engine on CUDA, bf16 and fp32.

Run on a GPU machine with `scripts/test.sh -m gpu tests/test_gpu.py`.
"""

from __future__ import annotations

import pytest
import torch

from rltrain.config import parse_config
from rltrain.record import read_jsonl
from rltrain.run import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_training_on_cuda(run_config, dtype: str) -> None:
    cfg = parse_config(run_config(max_steps=12, batch_size=32, run__device="cuda", run__dtype=dtype))
    session = train(cfg)
    assert session.record.status == "succeeded"
    rewards = [r["reward_mean"] for r in read_jsonl(session.run_dir / "metrics.jsonl")]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.2, rewards
