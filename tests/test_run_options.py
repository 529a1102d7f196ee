"""Optional keys of the hosted shape with their local meaning: warm start, adapter copies, retention,
TensorBoard, hosted-only notices."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from safetensors.torch import load_file

from rltrain.config import parse_config
from rltrain.record import read_jsonl
from rltrain.run import train


def _adapter(path: Path) -> dict:
    return load_file(str(path / "adapter_model.safetensors"))


def test_checkpoint_id_warm_starts_from_a_local_checkpoint(run_config, tmp_path: Path) -> None:
    first = train(parse_config(run_config(max_steps=3, run__id="first")))
    ckpt = first.run_dir / "checkpoints" / "step_3"
    # a vanishing learning rate: the warm-started adapter must still be the checkpoint's
    cfg = run_config(max_steps=1, run__id="warm", checkpoint_id=str(ckpt), learning_rate=1e-12)
    warm = train(parse_config(cfg))
    a, b = _adapter(ckpt), _adapter(warm.run_dir / "checkpoints" / "step_1")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
    assert any(float(v.abs().sum()) > 0 for k, v in b.items() if "lora_B" in k)  # not a fresh adapter


def test_adapter_copies_checkpoint_retention_and_tensorboard(run_config) -> None:
    cfg = run_config(
        max_steps=6,
        checkpoints={"interval": 2, "keep_last": 2},
        adapters={"interval": 2, "keep_last": 1},
        run__tensorboard=True,
    )
    session = train(parse_config(cfg))
    run_dir = session.run_dir
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")) == ["step_4", "step_6"]
    assert [Path(c).name for c in session.record.data["checkpoints"]] == ["step_4", "step_6"]
    copies = sorted(p.name for p in (run_dir / "adapters").glob("step_*"))
    assert copies == ["step_6"] and (run_dir / "adapters" / "step_6" / "adapter_config.json").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_hosted_only_keys_are_announced_once(run_config, caplog: pytest.LogCaptureFixture) -> None:
    cfg = run_config(max_steps=1, oversampling_factor=2.0, checkpoints={"keep_cloud": 1})
    with caplog.at_level(logging.INFO, logger="rltrain"):
        session = train(parse_config(cfg))
    notices = [r.getMessage() for r in caplog.records if "no meaning for a local run" in r.getMessage()]
    assert notices == [
        "notice: `oversampling_factor` has no meaning for a local run and is ignored",
        "notice: `checkpoints.keep_cloud` has no meaning for a local run and is ignored",
    ]
    assert len(read_jsonl(session.run_dir / "metrics.jsonl")) == 1
