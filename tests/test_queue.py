"""Run lifecycle: submit -> queued, worker claims and runs, cancel, failed-stale after kill -9, resume."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tomli_w import dumps

from rltrain import queue
from rltrain.__main__ import main
from rltrain.config import parse_config
from rltrain.record import RunRecord, read_jsonl
from rltrain.run import train
from tests.helpers import cli, valid_record


@pytest.fixture
def submit(run_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """submit(run_id, **overrides): queue a tiny run through the CLI; returns its dir."""
    monkeypatch.setenv("RLTRAIN_RUNS", str(tmp_path / "runs"))

    def _submit(run_id: str, **overrides: Any) -> Path:
        path = tmp_path / f"{run_id}.toml"
        path.write_text(dumps(run_config(run__id=run_id, **overrides)))
        assert main(["submit", "--config", str(path)]) == 0
        return tmp_path / "runs" / run_id

    return _submit


def _wait_rows(run_dir: Path, n: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and len(read_jsonl(run_dir / "metrics.jsonl")) < n:
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)


def test_submit_validates_and_records_a_queued_run(submit, run_config, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(dumps(run_config(run__id="bad", sampling={"max_tokenz": 3})))
    assert main(["submit", "--config", str(bad)]) == 2
    assert "sampling.max_tokenz: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "bad").exists()
    (tmp_path / "keys.env").write_text("A=1\n")
    run_dir = submit("q1", env_files=["keys.env"])  # relative to the config file
    assert capsys.readouterr().out.strip() == "q1"
    record = valid_record(run_dir)
    assert record["status"] == "queued" and record["base_model"] == "builtin:tiny"
    cfg = parse_config(json.loads((run_dir / "config.json").read_text()))
    assert cfg.env_files == [str(tmp_path / "keys.env")]  # pinned: the worker may run elsewhere
    assert main(["submit", "--config", str(tmp_path / "q1.toml")]) == 2  # the id exists
    assert "already exists" in capsys.readouterr().err
    assert main(["runs"]) == 0
    assert "q1" in capsys.readouterr().out.splitlines()[1].split()[:2]


def test_submit_a_taskset_only_environment_into_the_runs_dir_given(
    run_config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An [[env]] with only a verifiers taskset (no id) queues; --runs picks the directory."""
    raw = run_config(run__id="tasks", env=[{"taskset": {"id": "alphabet-sort-v1"}, "path": str(tmp_path)}])
    (tmp_path / "tasks.toml").write_text(dumps(raw))
    elsewhere = tmp_path / "elsewhere"
    assert main(["submit", "--config", str(tmp_path / "tasks.toml"), "--runs", str(elsewhere)]) == 0
    assert f"worker --runs {elsewhere}" in capsys.readouterr().err
    cfg = parse_config(json.loads((elsewhere / "tasks" / "config.json").read_text()))
    assert cfg.env[0].id is None and cfg.env[0].taskset == {"id": "alphabet-sort-v1"}
    assert cfg.env[0].path == str(tmp_path) and cfg.run.output_dir == str(elsewhere)
    assert valid_record(elsewhere / "tasks")["status"] == "queued"


def test_claim_is_exclusive_and_queue_is_oldest_first(submit) -> None:
    dirs = [submit(name) for name in ("c", "a", "b")]
    for i, d in enumerate(dirs):  # created_at has one-second resolution: set it apart explicitly
        rec = RunRecord.load(d)
        rec.data["created_at"] = f"2026-01-01T00:00:0{i}Z"
        rec.save()
    assert [d.name for d in queue.queued_runs(dirs[0].parent)] == ["c", "a", "b"]
    claim = queue.try_claim(dirs[0])
    assert claim is not None
    assert queue.try_claim(dirs[0]) is None  # flock: a second open file description is refused
    assert queue.Worker(dirs[0].parent).run_one(dirs[0]) is None  # claimed elsewhere: not ours
    claim.close()
    RunRecord.load(dirs[1]).set_status("cancelled")
    assert queue.Worker(dirs[0].parent).run_one(dirs[1]) is None  # not queued any more
    assert [d.name for d in queue.queued_runs(dirs[0].parent)] == ["c", "b"]


def test_lock_holder_and_failed_stale(submit) -> None:
    run_dir = submit("s")
    assert queue.lock_holder(run_dir) is None
    with (run_dir / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.write(str(os.getpid()))
        f.flush()
        assert queue.lock_holder(run_dir) == os.getpid()
        RunRecord.load(run_dir).set_status("running")
        assert queue.effective_status(run_dir, valid_record(run_dir)) == "running"
    assert queue.lock_holder(run_dir) is None  # the kernel dropped the lock with the file
    assert queue.effective_status(run_dir, valid_record(run_dir)) == "failed-stale"


def test_worker_runs_oldest_first_and_skips_cancelled(submit, capsys) -> None:
    dirs = [submit(name, max_steps=1) for name in ("w1", "w2", "w3")]
    for i, d in enumerate(dirs):
        rec = RunRecord.load(d)
        rec.data["created_at"] = f"2026-01-01T00:00:0{i}Z"
        rec.save()
    assert main(["runs", "cancel", "w2"]) == 0
    assert "cancelled (before it started)" in capsys.readouterr().out
    assert queue.Worker(dirs[0].parent).run(once=True) == ["w1", "w3"]
    for d in (dirs[0], dirs[2]):
        record = valid_record(d)
        assert record["status"] == "succeeded", (d / "output.log").read_text()
        assert record["metrics"]["step"] == 1
    assert valid_record(dirs[1])["status"] == "cancelled"
    assert not (dirs[1] / "metrics.jsonl").exists()


def test_two_workers_never_take_the_same_run(submit, tmp_path: Path) -> None:
    dirs = [submit(name, max_steps=1) for name in ("x1", "x2")]
    workers = [cli("worker", "--once", "--runs", str(tmp_path / "runs"), cwd=tmp_path) for _ in range(2)]
    outs = [w.communicate(timeout=120)[0] for w in workers]
    started = [line.split()[2] for out in outs for line in out.splitlines() if line.endswith(")")]
    assert sorted(started) == ["x1:", "x2:"], outs  # each run started exactly once, by one worker
    assert all(valid_record(d)["status"] == "succeeded" for d in dirs), outs


def test_cancel_running_run_then_ctrl_c_the_worker(submit, tmp_path: Path, capsys) -> None:
    first, second = submit("long1", max_steps=200), submit("long2", max_steps=200)
    worker = cli("worker", "--once", "--runs", str(tmp_path / "runs"), cwd=tmp_path)
    _wait_rows(first, 2, worker)
    assert main(["runs", "cancel", "long1", "--wait", "60"]) == 0
    assert "sent SIGTERM to pid" in capsys.readouterr().out
    _wait_rows(second, 1, worker)  # the worker went on to the next queued run
    worker.send_signal(signal.SIGINT)  # Ctrl-C: forwarded once, so the run still checkpoints
    out = worker.communicate(timeout=60)[0]
    assert worker.returncode == 0 and "long1: cancelled" in out and "long2: cancelled" in out, out
    for run_dir in (first, second):
        record = valid_record(run_dir)
        assert record["status"] == "cancelled" and record["error"] == "stopped by SIGTERM"
        last = Path(record["checkpoints"][-1])
        assert (last / "COMPLETE").is_file() and int(last.name[5:]) == record["metrics"]["step"] >= 1
    assert main(["runs", "cancel", "long1"]) == 0
    assert "already cancelled" in capsys.readouterr().out


def test_kill_9_shows_failed_stale_and_resume_reopens_it(
    run_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("RLTRAIN_RUNS", str(tmp_path / "runs"))
    cfg = run_config(max_steps=6, checkpoints={"interval": 1}, run__id="k9")
    (tmp_path / "k9.toml").write_text(dumps(cfg))
    proc = cli("--config", str(tmp_path / "k9.toml"), cwd=tmp_path)
    run_dir = tmp_path / "runs" / "k9"
    _wait_rows(run_dir, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert valid_record(run_dir)["status"] == "running"  # the process could not say anything
    assert main(["runs"]) == 0
    assert "failed-stale" in capsys.readouterr().out
    (run_dir / ".abort").write_text("rank 3: RuntimeError: injected\n")  # what a dying rank leaves
    assert main(["runs", "show", "k9"]) == 0
    assert "failed-stale after `rank 3: RuntimeError: injected`" in "".join(capsys.readouterr())
    assert main(["runs", "cancel", "k9"]) == 0  # nobody to signal: recorded at once
    assert "after its process had died (stale)" in capsys.readouterr().out
    statuses: list[str] = []
    real = RunRecord.set_status

    def spy(self: RunRecord, status: str, error: str | None = None) -> None:
        statuses.append(status)
        real(self, status, error)

    monkeypatch.setattr(RunRecord, "set_status", spy)
    session = train(parse_config(cfg), resume=run_dir)
    assert statuses == ["running", "succeeded"]  # the record is reopened, not replaced
    record = valid_record(run_dir)
    assert record["status"] == "succeeded" and "error" not in record
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == list(range(1, 7))
    assert queue.lock_holder(run_dir) == os.getpid()  # the resuming process holds the run
    assert session.record.status == "succeeded"


def test_submit_pins_environment_interpreters_without_leaving_their_venv(
    submit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`[[env]] python` and `openenv = {path, python}` made absolute; a venv's python (a link) kept as is."""
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").symlink_to(sys.executable)
    (tmp_path / "server").mkdir()
    monkeypatch.chdir(tmp_path)
    py = "venv/bin/python"
    envs = [{"id": "digits", "python": py}, {"openenv": {"path": "server", "python": py}}]
    cfg = parse_config(json.loads((submit("pins", env=envs) / "config.json").read_text()))
    assert cfg.env[0].python == str(tmp_path / py) and cfg.env[1].openenv is not None
    assert (cfg.env[1].openenv.path, cfg.env[1].openenv.python) == (
        str(tmp_path / "server"),
        str(tmp_path / py),
    )
