"""The guards in the loop, end to end on the tiny model: each signal induced by real training with the
fixtures in tests/fixtures/envs, firing and acting as configured (warn, stop, rollback); the demo, a
healthy run, fires none. The signals' logic on synthetic streams: tests/guards/test_watch.py."""

from __future__ import annotations

import logging
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from rltrain.config import parse_config
from rltrain.record import read_jsonl
from rltrain.run import train
from tests.helpers import valid_record

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "envs"


def _env(name: str) -> list[dict[str, str]]:
    return [{"id": str(FIXTURES / f"{name}.py")}]


def _events(rows: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    """(step, signal, action) of every guard event in metrics.jsonl."""
    return [(r["step"], e["signal"], e["action"]) for r in rows for e in r.get("guards", [])]


def _strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without their timings (which no two runs share)."""
    return [{k: v for k, v in r.items() if not k.endswith(("_s", "tok_s"))} for r in rows]


def _adapter(checkpoint: str | Path) -> dict[str, Any]:
    return load_file(str(Path(checkpoint) / "adapter_model.safetensors"))


def _check_rollback(run_dir: Path, lr: float) -> tuple[list[dict[str, Any]], int]:
    """The first rollback in a run's rows: its target restored at that step (the checkpoint written
    there holds the target's adapter), the learning rate halved after it, the run going on. Returns
    the rows and the step it happened at."""
    rows = read_jsonl(run_dir / "metrics.jsonl")
    at = next(r for r in rows if r.get("guard_decision", {}).get("action") == "rollback")
    step, target = at["step"], at["guard_decision"]["checkpoint"]
    (event,) = at["guards"]
    assert int(Path(target).name[5:]) < event["onset"] - 1  # before the weights that sampled the onset
    restored, saved = _adapter(run_dir / "checkpoints" / f"step_{step}"), _adapter(target)
    assert restored.keys() == saved.keys() and all((restored[k] == saved[k]).all() for k in saved)
    assert [r["lr"] for r in rows if r["step"] <= step] == [pytest.approx(lr)] * step
    assert rows[step]["lr"] == pytest.approx(lr / 2) and rows[step]["step"] == step + 1  # goes on
    return rows, step


def test_a_length_paying_reward_is_rolled_back_then_stopped(run_config, caplog) -> None:
    """Truncation caught and rolled back: the last good checkpoint restored, the learning rate halved,
    the run going on; the reward still pays length, so the guard fires again and, its one rollback
    spent, stops the run as failed."""
    guard = {"signal": "truncation", "action": "rollback", "window": 2, "max_rollbacks": 1}
    cfg = run_config(
        max_steps=16,
        env=_env("pays_length"),
        sampling={"max_tokens": 32},
        checkpoints={"interval": 1},
        guards=[guard],
    )
    with caplog.at_level(logging.WARNING, logger="rltrain"):
        run = train(parse_config(cfg))
    record = valid_record(run.run_dir)
    rows, step = _check_rollback(run.run_dir, lr=1e-2)
    events = _events(rows)
    assert [e[1:] for e in events] == [("truncation", "rollback")] * 2 and events[0][0] == step
    last = rows[-1]
    assert last["step"] == events[1][0] < 16 and last["truncated_frac"] >= 0.9
    assert record["status"] == "failed" and "already rolled back 1 times" in record["error"]
    assert record["error"].startswith("guard truncation (rollback): truncated_frac")
    # the record's metrics hold every event of the run, the latest row only its own
    assert [e["step"] for e in record["metrics"]["guard_events"]] == [e[0] for e in events]
    assert record["metrics"]["guards"][0]["message"] in record["error"]
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("guard truncation (rollback): truncated_frac") for m in logged)
    assert any("rolled back to step_" in m and "learning rate now 0.005" in m for m in logged)
    assert (run.run_dir / "curves.png").is_file()


def test_a_resumed_run_remembers_its_rollbacks(run_config, tmp_path: Path) -> None:
    """Pruning keeps what a rollback may need; and serially a resume is exact: resumed from the
    checkpoint before the stopping step, with a failing streak under way, the run repeats that step
    and stops there, its one rollback spent (the guards' state came from the checkpoint)."""
    guard = {"signal": "truncation", "action": "rollback", "window": 2, "max_rollbacks": 1}
    cfg = parse_config(
        run_config(
            max_steps=16,
            env=_env("pays_length"),
            sampling={"max_tokens": 32},
            checkpoints={"interval": 1, "keep_last": 2},
            guards=[guard],
            run__id="full",
        )
    )
    full = train(cfg).run_dir
    rows = read_jsonl(full / "metrics.jsonl")
    (_, first), (stop, last) = [(r["step"], e) for r in rows for e in r.get("guards", [])]
    assert first["action"] == "rollback" and rows[-1]["step"] == stop
    kept = sorted(int(p.name[5:]) for p in (full / "checkpoints").iterdir())
    # keep_last 2, and the newest before the weights that sampled the last streak's first row
    assert kept == [last["onset"] - 2, stop - 1, stop]
    copy = tmp_path / "runs" / "copy"
    shutil.copytree(full, copy)
    shutil.rmtree(copy / "checkpoints" / f"step_{stop}")
    (copy / ".lock").unlink()
    resumed = train(cfg, resume=copy)
    assert _strip(read_jsonl(copy / "metrics.jsonl")) == _strip(rows)
    assert resumed.record.status == "failed" and "already rolled back 1 times" in resumed.record.data["error"]
    assert [e["step"] for e in valid_record(copy)["metrics"]["guard_events"]] == [first["step"], stop]


@pytest.mark.parametrize(
    ("env", "action", "steps"),
    [("always_errors", "stop", 2), ("flat_reward", "warn", 3)],
    ids=["errors-stop", "flat-warn"],
)
def test_no_learning_signal(run_config, env: str, action: str, steps: int) -> None:
    """Every rollout erroring, or rewards that never differ: no_signal fires at its window (2 here)."""
    guard = {"signal": "no_signal", "window": 2, "action": action}
    cfg = run_config(max_steps=3, batch_size=8, env=_env(env), guards=[guard])
    run = train(parse_config(cfg))
    record, rows = valid_record(run.run_dir), read_jsonl(run.run_dir / "metrics.jsonl")
    assert _events(rows) == [(2, "no_signal", action)] and len(rows) == steps
    (event,) = rows[1]["guards"]
    key = "errored_frac" if env == "always_errors" else "flat_group_frac"
    assert event["values"][key] == 1.0
    assert record["status"] == ("failed" if action == "stop" else "succeeded")


def test_a_learning_rate_far_too_high_stops_on_the_collapse(run_config) -> None:
    """lr 1.0, one step ahead, the default loss: each update moves the policy ~15 nats/token (stale_kl:
    the drift of the samples one step old; mismatch_kl is judged only on samples of the current
    weights), and within 3 updates the policy answers with one token at reward 0: its entropy is gone,
    though it has learned nothing (not convergence)."""
    cfg = run_config(
        max_steps=8,
        learning_rate=1.0,
        max_async_level=1,
        algorithm={},  # the default loss
        guards=[{"signal": "entropy", "action": "stop"}],
    )
    run = train(parse_config(cfg))
    rows = read_jsonl(run.run_dir / "metrics.jsonl")
    events = _events(rows)
    assert [e[1:] for e in events] == [("entropy", "stop")]
    assert rows[-1]["step"] == events[0][0] < 8
    assert rows[1]["stale_kl"] > 1.0 and all(r["entropy"] <= 0.01 for r in rows[-3:])
    assert rows[-1]["reward_mean"] < 0.1 and rows[-1]["completion_len_mean"] <= 2
    assert valid_record(run.run_dir)["status"] == "failed"


@pytest.mark.slow
def test_a_reward_that_pays_repetition_is_stopped(run_config) -> None:
    cfg = run_config(
        max_steps=24, env=_env("pays_repetition"), guards=[{"signal": "repetition", "action": "stop"}]
    )
    run = train(parse_config(cfg))
    rows = read_jsonl(run.run_dir / "metrics.jsonl")
    ((step, _, _),) = [e for e in _events(rows) if e[1] == "repetition"]  # truncation warns before
    assert rows[-1]["step"] == step and all(r["repeat_frac"] >= 0.5 for r in rows[-3:])
    assert rows[0]["repeat_frac"] < 0.1
    assert valid_record(run.run_dir)["status"] == "failed"


@pytest.mark.slow
def test_a_rollback_while_sampling_ahead(run_config) -> None:
    """One step ahead: the batches sampled with the abandoned weights are dropped, the producer starts
    again from the restored adapter, and the run goes on."""
    guard = {"signal": "truncation", "action": "rollback", "window": 2, "max_rollbacks": 1}
    cfg = run_config(
        max_steps=16,
        max_async_level=1,
        algorithm={"variant": "cispo"},
        env=_env("pays_length"),
        sampling={"max_tokens": 32},
        checkpoints={"interval": 1},
        guards=[guard],
    )
    run = train(parse_config(cfg))
    rows, step = _check_rollback(run.run_dir, lr=1e-2)
    # the first batches after it were sampled with the restored adapter, not the abandoned one
    assert rows[step]["staleness_max"] == 0.0 and abs(rows[step]["mismatch_kl"]) < 1e-3


@pytest.mark.slow
def test_the_demo_fires_no_guard(tmp_path: Path) -> None:
    """configs/demo.toml, a healthy run: it learns its task and no guard fires (README: Guards)."""
    raw = tomllib.loads((REPO / "configs" / "demo.toml").read_text())
    raw["run"] |= {"output_dir": str(tmp_path / "runs"), "progress": False}
    run = train(parse_config(raw))
    rows = read_jsonl(run.run_dir / "metrics.jsonl")
    assert valid_record(run.run_dir)["status"] == "succeeded"
    assert _events(rows) == [] and rows[-1]["reward_mean"] > rows[0]["reward_mean"] + 0.5


@pytest.mark.slow
@pytest.mark.vllm
def test_a_rollback_reaches_the_vllm_engine(run_config) -> None:
    """With vLLM the restored adapter is loaded again under the same version number (a new LoRA id):
    the step after the rollback is sampled with it, so the trainer and the engine agree (a sampler
    still on the abandoned weights would be several updates away: a KL of 0.1 or more)."""
    pytest.importorskip("vllm")
    guard = {"signal": "truncation", "action": "rollback", "window": 2, "max_rollbacks": 1}
    cfg = run_config(
        max_steps=8,
        env=_env("pays_length"),
        sampling={"max_tokens": 32},
        checkpoints={"interval": 1},
        rollout={"backend": "vllm"},
        guards=[guard],
    )
    run = train(parse_config(cfg))
    rows = read_jsonl(run.run_dir / "metrics.jsonl")
    step = next(r["step"] for r in rows if r.get("guard_decision", {}).get("action") == "rollback")
    after = rows[step]
    assert after["step"] == step + 1 and after["lr"] == pytest.approx(5e-3)
    assert abs(after["mismatch_kl"]) < 1e-3 and after["is_ratio_max"] < 1.01
