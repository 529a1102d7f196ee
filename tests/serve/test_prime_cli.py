"""The real `prime` CLI (0.18.0 from PyPI, in its own venv cached under ~/.cache/rltrain/) against
`serve`: `prime train rl.toml` queues a run, a worker trains it, and list, get, metrics, rollouts,
progress, checkpoints, usage, logs, distributions print it; stop cancels it and delete removes it."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve.conftest import KEY, Live

VERSION = "0.18.0"
RL_TOML = """max_steps = 400
name = "from-prime"

[model]
name = "builtin:tiny"

[orchestrator]
batch_size = 8
rollouts_per_example = 4

[orchestrator.sampling]
max_tokens = 8

[[orchestrator.env]]
id = "digits"

[trainer.optim]
lr = 1e-2

[ckpt]
interval = 2
"""


def prime_venv() -> Path:
    """prime's venv, built once per machine (~60 s) and kept. A venv cannot be moved (its scripts name
    its python), so it is built in place and trusted once its marker is written; a lock keeps parallel
    builders apart."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rltrain"
    venv = cache / f"prime-{VERSION}"
    marker = venv / ".complete"
    if marker.exists():
        return venv
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f"prime-{VERSION}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            shutil.rmtree(venv, ignore_errors=True)  # a build that was killed half-way
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            subprocess.run([*pip, f"prime=={VERSION}"], check=True, timeout=600, capture_output=True)
            marker.write_text(VERSION)
    return venv


@pytest.fixture(scope="module")
def prime_bin() -> Path:
    return prime_venv() / "bin" / "prime"


def prime(exe: Path, live: Live, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "PRIME_API_BASE_URL": f"http://127.0.0.1:{live.port}",
           "PRIME_API_KEY": KEY, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}  # fmt: skip
    return subprocess.run([str(exe), "train", *args], env=env, capture_output=True, text=True, timeout=120)


def wait_for(check: object, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


@pytest.fixture
def worker(live: Live) -> Iterator[subprocess.Popen[bytes]]:
    cmd = [sys.executable, "-m", "rltrain", "worker", "--once", "--runs", str(live.root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield proc
    proc.terminate()
    proc.wait(timeout=60)


def test_prime_cli_queues_watches_stops_and_deletes_a_local_run(
    live: Live, prime_bin: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    (tmp_path / "rl.toml").write_text(RL_TOML)
    created = prime(prime_bin, live, tmp_path, str(tmp_path / "rl.toml"), "--yes", "-o", "json")
    assert created.returncode == 0, created.stdout + created.stderr
    run_id = json.loads(created.stdout)["run"]["runId"]
    listed = prime(prime_bin, live, tmp_path, "list").stdout
    assert (
        run_id in listed and "QUEUED" in listed and "builtin:tiny" in listed and "Total: 1 run(s)" in listed
    )
    request.getfixturevalue("worker")
    # waits poll over plain HTTP: each prime start costs a second of CPU
    wait_for(lambda: len(live.call("GET", f"/api/v1/rft/runs/{run_id}/progress")[1]["stepsWithSamples"]) >= 2)
    wait_for(lambda: live.call("GET", f"/api/v1/rft/runs/{run_id}/checkpoints")[1]["checkpoints"])
    progress = json.loads(prime(prime_bin, live, tmp_path, "progress", run_id).stdout)
    assert progress["latest_step"] >= 2 and progress["steps_with_samples"][:2] == [1, 2]

    got = prime(prime_bin, live, tmp_path, "get", run_id).stdout
    for line in ("Status: RUNNING", "Model: builtin:tiny", "Environments: digits", "Max Steps: 400",
                 "Batch Size: 8", "Rollouts per Example: 4", "Max Tokens: 8"):  # fmt: skip
        assert line in got, got
    metrics = json.loads(prime(prime_bin, live, tmp_path, "metrics", run_id, "--max-step", "2").stdout)
    assert [m["step"] for m in metrics["metrics"]] == [1, 2] and 0 <= metrics["metrics"][0][
        "reward_mean"
    ] <= 1
    rollouts = json.loads(prime(prime_bin, live, tmp_path, "rollouts", run_id, "-s", "1", "-n", "3").stdout)
    assert rollouts["total"] == 8 and rollouts["total_pages"] == 3 and len(rollouts["samples"]) == 3
    assert rollouts["samples"][0]["prompt"][0]["role"] == "user" and "completion" in rollouts["samples"][0]
    assert f"{run_id}/step_2" in prime(prime_bin, live, tmp_path, "checkpoints", run_id).stdout
    usage = prime(prime_bin, live, tmp_path, "usage", run_id).stdout
    assert "Run Usage" in usage and "Inference (output)" in usage and "RUNNING" in usage
    assert f"run directory {live.root / run_id}" in prime(prime_bin, live, tmp_path, "logs", run_id).stdout
    bins = json.loads(prime(prime_bin, live, tmp_path, "distributions", run_id, "-s", "1").stdout)["bins"]
    assert sum(b["count"] for b in bins) == 8

    refused = prime(prime_bin, live, tmp_path, "delete", run_id, "--force")
    assert refused.returncode == 1 and "HTTP 409" in refused.stdout
    stopped = prime(prime_bin, live, tmp_path, "stop", run_id, "--force")
    assert stopped.returncode == 0 and f"Run {run_id} stopped successfully" in stopped.stdout, stopped.stdout
    assert "Status: STOPPED" in prime(prime_bin, live, tmp_path, "get", run_id).stdout
    deleted = prime(prime_bin, live, tmp_path, "delete", run_id, "--force")
    assert deleted.returncode == 0 and "deleted successfully" in deleted.stdout
    assert "No Hosted Training runs found" in prime(prime_bin, live, tmp_path, "list").stdout
