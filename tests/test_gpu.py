"""GPU-only checks (marked `gpu`, never run in CI): the engine on CUDA in bf16 and fp32.

Self-contained, for the device image as it is (no vLLM, no conftest fixtures, no optional packages):
`scripts/gpu_check.sh` runs it there and counts an all-skipped run as a failure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
CUDA = torch.device("cuda")


def _config(tmp_path: Path, dtype: str, **extra: object) -> dict:
    return {
        "model": "builtin:tiny",
        "max_steps": 12,
        "batch_size": 32,
        "rollouts_per_example": 8,
        "learning_rate": 1e-2,
        "sampling": {"max_tokens": 16},
        "env": [{"id": "digits"}],
        "lora": {"rank": 16, "alpha": 32},
        "algorithm": {"variant": "dapo"},
        "rollout": {"backend": "hf"},
        "run": {"output_dir": str(tmp_path / "runs"), "progress": False, "tensorboard": False}
        | {"device": "cuda", "dtype": dtype},
        **extra,
    }


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_training_learns_on_cuda(tmp_path: Path, dtype: str) -> None:
    from rltrain.config import parse_config
    from rltrain.run import train

    run = train(parse_config(_config(tmp_path, dtype)))
    assert run.record.status == "succeeded", run.record.data.get("error")
    rows = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    rewards = [r["reward_mean"] for r in rows]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.2, rewards
    assert all(r["skipped_update"] == 0.0 for r in rows)


def test_bf16_lean_decoder_matches_the_trainer_on_cuda(tmp_path: Path) -> None:
    from rltrain.config import parse_config
    from rltrain.models import resolve_model_path
    from rltrain.rollout.hf_backend import HFBackend
    from rltrain.trainer.model import load_policy
    from rltrain.trainer.step import sequence_logprobs
    from rltrain.types import Sample, SamplingParams

    cfg = parse_config(_config(tmp_path, "bfloat16"))
    policy = load_policy(cfg, resolve_model_path(cfg.model), device=CUDA)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    prompt = policy.tokenizer("<|im_start|>user\nwrite a number<|im_end|>\n<|im_start|>assistant\n")[
        "input_ids"
    ]
    for lean in (True, False):
        backend = HFBackend(lambda ids: "", 0, CUDA, policy_model=policy.model, lean=lean)
        group = backend.generate([prompt], 8, SamplingParams(max_tokens=16, seed=1))[0]
        samples = [
            Sample(prompt, c.token_ids, c.logprobs, [1] * len(c.token_ids), 0.0, 0.0)
            for c in group.completions
        ]
        mine = sequence_logprobs(policy, samples, temperature=1.0)
        diffs = [
            abs(a - b)
            for s, m in zip(samples, mine, strict=True)
            for a, b in zip(s.inference_logprobs, m, strict=True)
        ]
        assert sum(diffs) / len(diffs) < 0.05, (lean, sum(diffs) / len(diffs))
