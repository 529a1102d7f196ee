"""FSDP: one optimizer step over ranks holding unequal shares equals one process's step over their union.

Two gloo processes shard the tiny model; rank 0 holds three samples, rank 1 one, and micro-batches of
one make rank 1 run filler micro-batches so that both run as many forwards/backwards (FSDP's
collectives would hang otherwise). The KL term adds the adapter-disabled forward to each micro-batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rltrain.config import FsdpConfig
from rltrain.trainer import fsdp
from tests.test_distributed import LAUNCH

WORKER = """
import json, sys
from dataclasses import replace
import torch
from rltrain.config import FsdpConfig, parse_config
from rltrain.distributed import Dist
from rltrain.models import resolve_model_path
from rltrain.trainer.model import load_policy
from rltrain.trainer.step import TrainSettings, train_step
from rltrain.types import Sample

out, sharded, keep, dtype = sys.argv[1], sys.argv[2] != "one", sys.argv[2] == "keep", sys.argv[3]
cfg = parse_config({
    "model": "builtin:tiny", "max_steps": 1, "batch_size": 4, "rollouts_per_example": 4,
    "learning_rate": 1e-2, "env": [{"id": "digits"}], "algorithm": {"kl_coef": 0.1},
    "run": {"dtype": dtype},
})
dist = Dist()
device = dist.init("cpu")
policy = load_policy(cfg, resolve_model_path(cfg.model), device=device,
                     shard=FsdpConfig(enabled=True, reshard_after_forward=not keep) if sharded else None)
gen = torch.Generator().manual_seed(0)
samples = []
for i, adv in enumerate([1.0, -0.5, 0.25, -0.75]):
    prompt = torch.randint(10, 200, (5 + i,), generator=gen).tolist()
    comp = torch.randint(10, 200, (3 + 2 * i,), generator=gen).tolist()
    samples.append(Sample(prompt, comp, [-4.0] * len(comp), [1] * len(comp), adv, adv))
mine = (samples[:3] if dist.rank == 0 else samples[3:]) if sharded else samples
for p in policy.trainable_parameters():  # B = 0 at init: move it so that A gets a gradient too
    with torch.no_grad():
        p.add_(0.01)
settings = replace(TrainSettings.from_config(cfg), micro_batch_size=1)
stats = train_step(policy, mine, settings, dist=dist)
weights = [w.sum().item() for w in policy.full_trainable()]
if dist.is_main:
    json.dump({"stats": stats, "weights": weights, "sharded": policy.sharded}, open(out, "w"))
dist.close(synced=True)
"""


def _run(args: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


@pytest.mark.parametrize(
    ("mode", "dtype"),
    [("fsdp", "float32"), ("keep", "float32"), ("fsdp", "bfloat16")],
    ids=["reshard", "keep-gathered", "reshard-bf16"],
)
def test_uneven_shares_step_like_one_process(tmp_path: Path, mode: str, dtype: str) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    _run([*LAUNCH, str(script), str(tmp_path / "fsdp.json"), mode, dtype])
    _run([str(script), str(tmp_path / "one.json"), "one", dtype])
    two = json.loads((tmp_path / "fsdp.json").read_text())
    one = json.loads((tmp_path / "one.json").read_text())
    assert two["sharded"] and not one["sharded"]
    # bf16 base weights: the sharded and the whole forward round differently, as on a GPU
    rel = 1e-5 if dtype == "float32" else 2e-2
    for key in ("loss", "kl", "grad_norm", "training_tokens", "entropy"):
        assert two["stats"][key] == pytest.approx(one["stats"][key], rel=rel, abs=1e-8), key
    assert one["stats"]["kl"] > 0 and one["stats"]["grad_norm"] > 0
    assert two["weights"] == pytest.approx(one["weights"], rel=rel, abs=1e-6)


def test_accelerate_use_fsdp_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    off = FsdpConfig()
    assert fsdp.requested(off) is off
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "SHARD_GRAD_OP")  # FSDP1 spelling of "keep"
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "true")
    assert fsdp.requested(off) == FsdpConfig(enabled=True, reshard_after_forward=False, cpu_offload=True)
    assert fsdp.settings(off, world=1) is None  # nothing to shard over in one process


def test_full_and_like_pass_plain_tensors_through() -> None:
    t = torch.arange(6.0).reshape(2, 3)
    assert torch.equal(fsdp.full(t), t)
    assert fsdp.like(t.double(), t).dtype == torch.float32
