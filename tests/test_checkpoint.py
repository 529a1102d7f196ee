"""A guard's rollback into the live policy (weights, optimizer moments, a scaled learning rate), and
`[checkpoints] keep_best`: the best checkpoint by the lower bound of its eval's interval survives pruning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from rltrain import checkpoint as ckpt
from rltrain.config import ConfigError, parse_config
from rltrain.models import resolve_model_path
from rltrain.record import append_jsonl
from rltrain.trainer.model import load_policy
from rltrain.trainer.step import TrainSettings, train_step
from rltrain.types import Sample


def _samples() -> list[Sample]:
    return [
        Sample([5, 6, 7], [8, 9, 10], [-1.0] * 3, [1] * 3, float(i % 2), 1.0 - 2 * (i % 2), 0)
        for i in range(4)
    ]


def test_roll_back_restores_weights_and_moments_and_scales_the_learning_rate(
    run_config, tmp_path: Path
) -> None:
    cfg = parse_config(run_config(algorithm={"lr_schedule": "linear"}, max_steps=10))
    policy = load_policy(cfg, resolve_model_path(cfg.model))
    settings = TrainSettings.from_config(cfg)
    train_step(policy, _samples(), settings)
    saved = ckpt.save_checkpoint(tmp_path, 1, policy, {})
    weights = [p.detach().clone() for p in policy.trainable_parameters()]
    moments = [policy.optimizer.state[p]["exp_avg"].clone() for p in policy.trainable_parameters()]
    for _ in range(3):  # the run goes on, and goes wrong
        train_step(policy, _samples(), settings)
    lr_before = policy.scheduler.get_last_lr()[0]  # the linear decay's rate at step 4
    assert any(not torch.equal(a, p) for a, p in zip(weights, policy.trainable_parameters(), strict=True))

    new_lr = ckpt.roll_back(policy, saved, lr_factor=0.5)

    assert new_lr == pytest.approx(lr_before * 0.5)
    for a, p in zip(weights, policy.trainable_parameters(), strict=True):
        torch.testing.assert_close(p.detach(), a, rtol=0, atol=0)
    for m, p in zip(moments, policy.trainable_parameters(), strict=True):
        torch.testing.assert_close(policy.optimizer.state[p]["exp_avg"], m, rtol=0, atol=0)
    # the schedule goes on from step 4 at half the rate: the next step trains at it, the one after decays
    assert train_step(policy, _samples(), settings)["lr"] == pytest.approx(lr_before * 0.5)
    assert policy.scheduler.get_last_lr()[0] == pytest.approx(1e-2 * 0.5 * (10 - 5) / 10)
    other = tmp_path / "other"
    other.mkdir()
    (other / "adapter_config.json").write_text((saved / "adapter_config.json").read_text())
    torch.save({}, other / ckpt.STATE_FILE)
    from safetensors.torch import save_file

    save_file(
        {"base_model.model.nothing.lora_A.weight": torch.zeros(2, 2)},
        str(other / "adapter_model.safetensors"),
    )
    with pytest.raises(RuntimeError, match="does not fit this model's LoRA"):
        policy.load_adapter_weights(other)


def _checkpoints(run_dir: Path, steps: list[int]) -> None:
    for step in steps:
        path = run_dir / "checkpoints" / f"step_{step}"
        path.mkdir(parents=True)
        (path / ckpt.MARKER).write_text(f"{step}\n")


def _row(step: int, value: float, lo: float | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"step": step, "eval/digits/avg@4": value}
    if lo is not None:
        row["eval/digits/avg@4/lo"] = lo
    return row


def test_the_best_checkpoint_is_ranked_by_the_lower_bound_of_its_interval(tmp_path: Path) -> None:
    _checkpoints(tmp_path, [10, 20, 30, 40, 50])
    rows = [_row(10, 0.5, 0.40), _row(20, 0.7, 0.35), _row(25, 0.9, 0.8), _row(30, 0.6, 0.45), {"step": 40}]
    for row in rows:
        append_jsonl(tmp_path / "metrics.jsonl", row)
    found = ckpt.complete_checkpoints(tmp_path)
    # step 20's mean is the highest, but its interval is wide; step 25 has no checkpoint
    assert ckpt.best_checkpoint(found, rows, "eval/digits/avg@4") == tmp_path / "checkpoints" / "step_30"
    assert ckpt.best_checkpoint(found, [_row(10, 0.5), _row(20, 0.4)], "eval/digits/avg@4").name == "step_10"
    assert ckpt.best_checkpoint(found, rows, "eval/other/avg@4") is None
    ckpt.prune(
        tmp_path, keep_last=1, keep_best="eval/digits/avg@4", protect=[tmp_path / "checkpoints" / "step_10"]
    )
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path)] == ["step_10", "step_30", "step_50"]
    ckpt.prune(tmp_path, keep_last=1)
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path)] == ["step_50"]


def test_keep_best_names_an_eval_of_the_config(run_config) -> None:
    with pytest.raises(
        ConfigError, match="keep_best = 'eval/digits/avg@4': name an eval/<env>/avg@k key of an"
    ):
        parse_config(run_config(checkpoints={"keep_best": "eval/digits/avg@4"}))
    cfg = parse_config(
        run_config(checkpoints={"interval": 5, "keep_best": "eval/digits/avg@4"}, eval={"interval": 2})
    )
    assert cfg.notices() == [
        "checkpoints.keep_best: no checkpoint has an eval at its step; only keep_last applies"
    ]
    cfg = parse_config(
        run_config(checkpoints={"interval": 4, "keep_best": "eval/digits/avg@4"}, eval={"interval": 2})
    )
    assert cfg.notices() == []
