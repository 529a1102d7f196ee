"""The routes prime 0.18 calls, answered from made-up run directories, in prime's shapes (its pydantic
models validate them in tests/serve/test_prime_cli.py); the status mapping both ways."""

from __future__ import annotations

import fcntl

import pytest

from rltrain.serve import shapes
from tests.serve.conftest import Live, fake_run


def test_list_pages_newest_first_and_filters_by_either_vocabulary(live: Live) -> None:
    for i, status in enumerate(["succeeded", "failed", "cancelled"]):
        fake_run(live.root, f"run-{i}", status)
    code, page, _ = live.call("GET", "/api/v1/rft/runs?page=1&limit=2")
    assert code == 200 and page["total"] == 3 and page["total_pages"] == 2 and len(page["runs"]) == 2
    assert {r["status"] for r in live.call("GET", "/api/v1/rft/runs?limit=9")[1]["runs"]} == {
        "COMPLETED", "FAILED", "STOPPED",
    }  # fmt: skip
    assert [r["id"] for r in live.call("GET", "/api/v1/rft/runs?status=STOPPED")[1]["runs"]] == ["run-2"]
    assert [r["id"] for r in live.call("GET", "/api/v1/rft/runs?status=failed")[1]["runs"]] == ["run-1"]


def test_a_run_in_prime_shapes(live: Live) -> None:
    fake_run(live.root, "r", "succeeded", steps=3)
    run = live.call("GET", "/api/v1/rft/runs/r")[1]["run"]
    assert run["status"] == "COMPLETED" and run["baseModel"] == "builtin:tiny" and run["maxSteps"] == 10
    assert run["environments"][0]["name"] == "digits" and run["kind"] == "EXTERNAL"
    assert run["rltrain"] | {} == {
        "status": "succeeded", "step": 3, "rewardMean": 0.3, "tokens": 150, "costUsd": 0.25,
        "environment": "digits", "checkpoints": 1,
    }  # fmt: skip
    metrics = live.call("GET", "/api/v1/rft/runs/r/metrics?min_step=2&max_step=3")[1]["metrics"]
    assert [m["step"] for m in metrics] == [2, 3]
    assert [m["step"] for m in live.call("GET", "/api/v1/rft/runs/r/metrics?limit=1")[1]["metrics"]] == [3]
    samples = live.call("GET", "/api/v1/rft/runs/r/samples?step=2&page=2&limit=3")[1]
    assert samples["total"] == 4 and samples["total_pages"] == 2 and samples["samples"][0]["index"] == 3
    assert samples["samples"][0]["prompt"] == [{"role": "user", "content": "say 2"}]
    progress = live.call("GET", "/api/v1/rft/runs/r/progress")[1]
    assert progress["latestStep"] == 3 and progress["stepsWithSamples"] == [1, 2, 3]
    (ckpt,) = live.call("GET", "/api/v1/rft/runs/r/checkpoints")[1]["checkpoints"]
    assert ckpt["step"] == 3 and ckpt["status"] == "READY" and ckpt["sizeBytes"] == 100
    usage = live.call("GET", "/api/v1/billing/runs/r/usage")[1]
    assert usage["inference"]["output_tokens"] == 50 and usage["total_cost_usd"] == 0.25
    dist = live.call("GET", "/api/v1/rft/runs/r/distributions?type=rewards")[1]
    assert dist["step"] == 3 and sum(b["count"] for b in dist["bins"]) == 4


def test_logs_tail_and_search(live: Live) -> None:
    run_dir = fake_run(live.root, "r")
    (run_dir / "output.log").write_text("".join(f"line {i}\n" for i in range(50)) + "boom\n")
    assert live.call("GET", "/api/v1/rft/runs/r/logs?tail_lines=2")[1]["logs"] == "line 49\nboom"
    assert live.call("GET", "/api/v1/rft/runs/r/logs?search=boom")[1]["logs"] == "boom"
    assert live.call("GET", "/api/v1/rft/runs/r/logs?search=(&regex=true")[0] == 400


def test_stop_cancels_a_queued_run_and_delete_refuses_a_running_one(live: Live) -> None:
    fake_run(live.root, "q", "queued", steps=0)
    code, body, _ = live.call("PUT", "/api/v1/rft/runs/q/stop")
    assert code == 200 and body["run"]["status"] == "STOPPED"
    running = fake_run(live.root, "busy", "running")
    with (running / ".lock").open("a+") as lock:  # what the training process holds for its whole life
        fcntl.flock(lock, fcntl.LOCK_EX)
        code, body, _ = live.call("DELETE", "/api/v1/rft/runs/busy")
        assert code == 409 and "is running" in body["detail"]
    assert live.call("GET", "/api/v1/rft/runs/busy")[1]["run"]["status"] == "FAILED"  # stale now
    assert live.call("DELETE", "/api/v1/rft/runs/q")[1] == {"runId": "q", "deleted": True}
    assert live.call("GET", "/api/v1/rft/runs/q")[0] == 404
    assert [p.name.split("-")[0] for p in (live.root / ".deleted").iterdir()] == ["q"]  # moved, not lost


def test_create_queues_a_prime_rl_config_and_names_a_bad_key(live: Live) -> None:
    config = {"max_steps": 3, "model": {"name": "builtin:tiny"}, "orchestrator": {"batch_size": 8}}
    code, body, _ = live.call("POST", "/api/v1/training/runs", {"config": config, "name": "mine"})
    assert code == 200 and body["tokenValue"] == ""
    run = live.call("GET", f"/api/v1/rft/runs/{body['runId']}")[1]["run"]
    assert run["status"] == "QUEUED" and run["name"] == "mine" and run["batchSize"] == 8
    bad = {"config": {**config, "orchestrator": {"batch_sise": 8}}}
    code, body, _ = live.call("POST", "/api/v1/training/runs", bad)
    assert (
        code == 422
        and body["detail"] == "config error: orchestrator.batch_sise: unknown key in a prime-rl config"
    )


@pytest.mark.parametrize(
    ("local", "prime"),
    [("queued", "QUEUED"), ("running", "RUNNING"), ("succeeded", "COMPLETED"), ("failed", "FAILED"),
     ("cancelled", "STOPPED"), ("failed-stale", "FAILED")],
)  # fmt: skip
def test_status_mapping_round_trips(local: str, prime: str) -> None:
    assert shapes.TO_PRIME[local] == prime
    assert local in shapes.local_statuses(prime) and local in shapes.local_statuses(local)
