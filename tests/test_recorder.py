"""The run's writer: metrics rows, rollouts files, usage and cost, and the state a checkpoint keeps."""

from __future__ import annotations

from pathlib import Path

from rltrain.record import RunRecord, read_jsonl
from rltrain.recorder import Recorder
from tests.helpers import valid_record


def _recorder(tmp_path: Path) -> Recorder:
    record = RunRecord.create(
        tmp_path,
        run_id="r1",
        base_model="builtin:tiny",
        environment="digits",
        config={"max_steps": 3},
        team_id="t",
    )
    return Recorder(tmp_path, record, price_per_device_hour=3.6)


def test_log_step_writes_metrics_rollouts_and_record(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    rec.count(input_tokens=10, output_tokens=4, training_tokens=14)
    rec.log_step(1, {"reward_mean": 0.5, "loss": float("nan")}, [{"completion": "12", "reward": 1.0}])
    rec.count(input_tokens=10, output_tokens=6, training_tokens=16)
    rec.log_step(2, {"reward_mean": 0.75}, [])
    assert [r["step"] for r in read_jsonl(rec.metrics_path)] == [1, 2]
    assert read_jsonl(tmp_path / "rollouts" / "step_1.jsonl") == [{"completion": "12", "reward": 1.0}]
    assert not (tmp_path / "rollouts" / "step_2.jsonl").exists()
    record = valid_record(tmp_path)
    assert record["metrics"] == {"step": 2, "reward_mean": 0.75}
    assert record["usage"] | {"cost_usd": 0} == {
        "input_tokens": 20, "output_tokens": 10, "training_tokens": 30, "cost_usd": 0,
    }  # fmt: skip


def test_cost_is_device_time_times_price(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    rec.usage.device_seconds = 1000.0  # 1000 s at $3.60 an hour on one device
    rec.save()
    assert valid_record(tmp_path)["usage"]["cost_usd"] == 1.0


def test_state_round_trip_truncates_replayed_rows(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    for step in (1, 2, 3):
        rec.count(1, 1, 2)
        rec.log_step(step, {"reward_mean": float(step)}, [])
        if step == 2:
            state = rec.state_dict()
    again = _recorder(tmp_path)
    again.load_state_dict(state, step=2, checkpoints=["c2"])
    assert again.usage.training_tokens == 4 and again.last_metrics["step"] == 2
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]


def test_finish_sets_status_and_error(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    rec.finish("cancelled", "stopped by SIGTERM")
    record = valid_record(tmp_path)
    assert record["status"] == "cancelled" and record["error"] == "stopped by SIGTERM"


def test_curves_during_a_run_wait_out_fifty_times_their_drawing(tmp_path: Path) -> None:
    """Drawing stays under ~2% of a run: a checkpoint draws only 50 drawings' time after the last."""
    rec = _recorder(tmp_path)
    rec.set_status("running")
    curves = tmp_path / "curves.png"
    rec.log_step(1, {"reward_mean": 0.5}, [])
    rec.write_curves()  # a run just started: 50 first drawings' time has not passed
    assert not curves.exists()
    rec._plotted_at -= 50 * rec._plot_s
    rec.write_curves()
    first = curves.stat().st_mtime_ns
    assert rec._plot_s > 0
    rec.log_step(2, {"reward_mean": 0.6}, [])
    rec.write_curves()  # a checkpoint right after: too soon
    assert curves.stat().st_mtime_ns == first
    rec._plotted_at -= 50 * rec._plot_s  # as if 50 drawings' time had passed
    rec.write_curves()
    second = curves.stat().st_mtime_ns
    assert second != first
    rec.log_step(3, {"reward_mean": 0.7}, [])
    rec.finish("succeeded")
    rec.write_curves()  # the run's end draws its last step however soon
    assert curves.stat().st_mtime_ns != second
