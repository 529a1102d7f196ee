"""Faults a run must survive or fail cleanly on: non-finite updates, a full or unwritable disk during a
checkpoint, run ids that try to escape the output dir, secrets that must never reach the record."""

from __future__ import annotations

import errno
import gc
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from tomli_w import dumps

import rltrain.checkpoint
import rltrain.fsutil
import rltrain.trainer.step
from rltrain.__main__ import main
from rltrain.checkpoint import complete_checkpoints, load_trainer_state
from rltrain.config import parse_config
from rltrain.record import read_jsonl, validate_run_id
from rltrain.run import train
from tests.helpers import valid_record


def _nan_loss_on(monkeypatch: pytest.MonkeyPatch, bad_steps: set[int]) -> None:
    """policy_loss returns a NaN loss (with a graph, so backward gives NaN gradients) on those steps."""
    real = rltrain.trainer.step.policy_loss
    calls = {"n": 0}

    def nan_loss(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1  # one micro-batch per step (micro_batch_size = batch_size)
        out = real(*args, **kwargs)
        if calls["n"] in bad_steps:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(rltrain.trainer.step, "policy_loss", nan_loss)


def test_nan_loss_skips_the_update_and_counts_it(run_config, monkeypatch: pytest.MonkeyPatch) -> None:
    _nan_loss_on(monkeypatch, {2})
    cfg = run_config(max_steps=3, checkpoints={"interval": 1}, algorithm={"micro_batch_size": 16})
    session = train(parse_config(cfg))
    record = valid_record(session.run_dir)
    assert record["status"] == "succeeded"
    rows = read_jsonl(session.run_dir / "metrics.jsonl")
    assert [r["skipped_update"] for r in rows] == [0.0, 1.0, 0.0]
    assert [r["nonfinite_skips"] for r in rows] == [0.0, 1.0, 1.0]
    adapters = [
        load_file(str(p / "adapter_model.safetensors")) for p in complete_checkpoints(session.run_dir)
    ]
    lora_b = [k for k in adapters[0] if "lora_B" in k]
    assert all(torch.equal(adapters[0][k], adapters[1][k]) for k in lora_b)  # step 2 changed nothing
    assert not all(torch.equal(adapters[1][k], adapters[2][k]) for k in lora_b)  # step 3 trained


def test_record_is_strict_json_after_a_skipped_update(run_config, monkeypatch: pytest.MonkeyPatch) -> None:
    _nan_loss_on(monkeypatch, {1})
    session = train(parse_config(run_config(max_steps=1, algorithm={"micro_batch_size": 16})))

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON (RFC 8259): jq, JavaScript and Go refuse the record")

    json.loads((session.run_dir / "run.json").read_text(), parse_constant=refuse)


def test_consecutive_nan_updates_fail_the_run_with_the_reason(
    run_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    _nan_loss_on(monkeypatch, set(range(1, 100)))
    cfg = run_config(max_steps=4, run__id="nan", algorithm={"micro_batch_size": 16, "max_nonfinite_skips": 2})
    with pytest.raises(FloatingPointError, match="2 consecutive updates skipped"):
        train(parse_config(cfg))
    run_dir = Path(cfg["run"]["output_dir"]) / "nan"
    record = valid_record(run_dir)
    assert record["status"] == "failed"
    assert record["error"].startswith("FloatingPointError: 2 consecutive updates skipped")
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1]


def _fail_checkpoint_at(monkeypatch: pytest.MonkeyPatch, step: int, how: str) -> None:
    """A full disk (torch.save raises ENOSPC) or an unwritable dir (mkdtemp raises EACCES) at one step."""
    target, attr, err = {
        "disk-full": (rltrain.checkpoint.torch, "save", errno.ENOSPC),
        "unwritable": (rltrain.fsutil.tempfile, "mkdtemp", errno.EACCES),
    }[how]
    real = getattr(target, attr)

    def failing(*args: Any, **kwargs: Any) -> Any:
        if f".step_{step}." in str(args[1] if attr == "save" else kwargs.get("prefix")):
            raise OSError(err, os.strerror(err))
        return real(*args, **kwargs)

    monkeypatch.setattr(target, attr, failing)


@pytest.mark.parametrize(
    ("how", "message"),
    [("disk-full", "No space left on device"), ("unwritable", "Permission denied")],
)
def test_checkpoint_write_failure_fails_cleanly_and_keeps_the_last_one(
    run_config, monkeypatch: pytest.MonkeyPatch, how: str, message: str
) -> None:
    _fail_checkpoint_at(monkeypatch, 4, how)
    cfg = run_config(max_steps=6, run__id="full", checkpoints={"interval": 2})
    with pytest.raises(OSError, match=message):
        train(parse_config(cfg))
    run_dir = Path(cfg["run"]["output_dir"]) / "full"
    record = valid_record(run_dir)
    assert record["status"] == "failed" and message in record["error"]
    assert [Path(c).name for c in record["checkpoints"]] == ["step_2"]
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step_2"]  # no half-written step_4
    assert load_trainer_state(run_dir / "checkpoints" / "step_2")["step"] == 2
    monkeypatch.undo()  # space freed: resume continues from step 2
    gc.collect()  # the failed session (in a traceback cycle) still holds the run's lock in this process
    train(parse_config(cfg), resume=run_dir)
    assert valid_record(run_dir)["status"] == "succeeded"
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == list(range(1, 7))


def test_failure_before_first_checkpoint_then_resume_starts_clean(
    run_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_checkpoint_at(monkeypatch, 2, "disk-full")
    cfg = run_config(max_steps=3, run__id="early", checkpoints={"interval": 2})
    with pytest.raises(OSError):
        train(parse_config(cfg))
    run_dir = Path(cfg["run"]["output_dir"]) / "early"
    assert complete_checkpoints(run_dir) == []
    monkeypatch.undo()
    gc.collect()  # the failed session (in a traceback cycle) still holds the run's lock in this process
    train(parse_config(cfg), resume=run_dir)  # no checkpoint: starts from scratch
    assert valid_record(run_dir)["status"] == "succeeded"
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3]


BAD_IDS = ["../escape", "..", "a/b", "/etc", "x/../../y", ".hidden", "a" * 129, "", "a\nb", "é"]


@pytest.mark.parametrize("run_id", BAD_IDS)
def test_run_ids_cannot_escape_the_output_dir(run_id: str) -> None:
    with pytest.raises(ValueError, match="not a valid run id"):
        validate_run_id(run_id)


def test_cli_refuses_escaping_ids(
    run_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("RLTRAIN_RUNS", str(tmp_path / "runs"))
    (tmp_path / "runs").mkdir()
    (tmp_path / "decoy").mkdir()
    (tmp_path / "decoy" / "run.json").write_text('{"id": "decoy", "status": "running"}')
    for args in (["runs", "show", "../decoy"], ["runs", "cancel", "../decoy"]):
        assert main(args) == 2
        assert "not a valid run id" in capsys.readouterr().err
    path = tmp_path / "c.toml"
    path.write_text(dumps(run_config(run__id="../decoy")))
    assert main(["submit", "--config", str(path)]) == 2
    assert json.loads((tmp_path / "decoy" / "run.json").read_text())["status"] == "running"  # untouched


ENV_SECRET = "envfile-secret-7f3a9c"
CONFIG_SECRET = "sk-config-secret-51d2e0"


def test_record_never_holds_secrets(run_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "keys.env").write_text(f"export RLTRAIN_TEST_TOKEN='{ENV_SECRET}'\n")
    env_py = tmp_path / "keyed_env.py"
    env_py.write_text(
        "import os\nimport rltrain\n"
        "def load_environment(api_key: str = ''):\n"
        f"    assert os.environ['RLTRAIN_TEST_TOKEN'] == {ENV_SECRET!r} and api_key == {CONFIG_SECRET!r}\n"
        "    return rltrain.Environment([{'question': 'say 12'}], [lambda completion: 1.0])\n"
    )
    monkeypatch.delenv("RLTRAIN_TEST_TOKEN", raising=False)
    cfg = run_config(
        max_steps=2,
        env_files=[str(tmp_path / "keys.env")],
        env=[{"id": str(env_py), "args": {"api_key": CONFIG_SECRET}}],
        buffer={"api_key": CONFIG_SECRET, "online_difficulty_filtering": True},
    )
    session = train(parse_config(cfg))
    record = valid_record(session.run_dir)
    assert record["status"] == "succeeded"
    assert record["config"]["env"][0]["args"]["api_key"] == "<redacted>"
    assert record["config"]["buffer"] == {"api_key": "<redacted>", "online_difficulty_filtering": True}
    for path in session.run_dir.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            assert ENV_SECRET.encode() not in text, path  # env_files values: nowhere in the run dir
            if path.name != "config.json":  # config.json keeps env args verbatim: resume needs them
                assert CONFIG_SECRET.encode() not in text, path


def test_a_rank_on_a_node_without_the_run_dir_says_so(run_config, tmp_path: Path) -> None:
    """Several machines without a shared output_dir: the joining rank names the directory it lacks."""
    from rltrain.distributed import Dist
    from rltrain.rundir import open_run_dir

    dist = Dist()
    dist.rank, dist.world = 1, 2
    dist.all_gather = lambda obj: [str(tmp_path / "on-node-0" / "run"), obj]  # type: ignore[method-assign]
    with pytest.raises(FileNotFoundError, match="on-node-0/run: with several machines run.output_dir"):
        open_run_dir(parse_config(run_config()), None, dist)
