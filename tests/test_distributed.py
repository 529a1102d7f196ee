"""Two processes on CPU (gloo) through `accelerate launch`, data-parallel (DDP-style) and sharded (FSDP):
same numbers as one process, one writer, weights in sync, and a failing rank ends the run everywhere
within seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import tomli_w
import torch

from rltrain.distributed import Dist
from rltrain.record import load_schema, read_jsonl

# accelerate's --cpu launches ONE process; these flags give two gloo processes
LAUNCH = [
    "-m",
    "accelerate.commands.launch",
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
]
SAME = ("reward_mean", "input_tokens", "output_tokens", "training_tokens", "completion_len_mean")


def _config(tmp_path: Path, run_id: str, **extra: Any) -> Path:
    cfg: dict[str, Any] = {
        "model": "builtin:tiny",
        "max_steps": 3,
        "batch_size": 32,
        "rollouts_per_example": 8,
        "learning_rate": 1e-2,
        "max_inflight_rollouts": 16,
        "sampling": {"max_tokens": 16},
        "env": [{"id": "digits"}],
        "rollout": {"backend": "hf"},
        "checkpoints": {"interval": 2},
        "run": {"output_dir": str(tmp_path / "runs"), "id": run_id, "progress": False, "tensorboard": False},
    }
    cfg.update(extra)
    path = tmp_path / f"{run_id}.toml"
    path.write_text(tomli_w.dumps(cfg))
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _record(tmp_path: Path, run_id: str) -> dict[str, Any]:
    record = json.loads((tmp_path / "runs" / run_id / "run.json").read_text())
    jsonschema.validate(record, load_schema())
    return record


def test_two_processes_match_one(tmp_path: Path) -> None:
    two = subprocess.run(
        [sys.executable, *LAUNCH, "-m", "rltrain", "--config", str(_config(tmp_path, "two"))],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, "-m", "rltrain", "--config", str(_config(tmp_path, "one"))],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    rows2 = read_jsonl(tmp_path / "runs" / "two" / "metrics.jsonl")
    rows1 = read_jsonl(tmp_path / "runs" / "one" / "metrics.jsonl")
    assert [r["step"] for r in rows2] == [1, 2, 3]  # one writer: each step once
    assert [r["world_size"] for r in rows2] == [2.0] * 3
    for r1, r2 in zip(rows1, rows2, strict=True):
        assert {k: r1[k] for k in SAME} == {k: r2[k] for k in SAME}
        assert r2["lora_checksum"] > 0  # present only when ranks compared their weights and agreed
    # each step's rollout file holds both ranks' completions
    lines = (tmp_path / "runs" / "two" / "rollouts" / "step_1.jsonl").read_text().splitlines()
    assert sorted({json.loads(x)["group"] for x in lines}) == [0, 1, 2, 3] and len(lines) == 32
    rec2, rec1 = _record(tmp_path, "two"), _record(tmp_path, "one")
    assert rec2["status"] == "succeeded"
    assert (
        rec2["usage"]["input_tokens"]
        == sum(r["input_tokens"] for r in rows2)
        == rec1["usage"]["input_tokens"]
    )
    assert rec2["usage"]["output_tokens"] == rec1["usage"]["output_tokens"]
    assert [Path(c).name for c in rec2["checkpoints"]] == ["step_2", "step_3"]


def _launch(tmp_path: Path, args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, *args], env=_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_fsdp_matches_one_process_and_resumes_exactly(tmp_path: Path) -> None:
    """FSDP takes the one-process step, and a sharded run resumes bit for bit.

    Only the first step is compared with one process: FSDP's reduce-scatter sums gradients in float32
    (the one-process path in float64), which leaves the adapters ~2.5e-5 apart after one step (measured
    on this VM's AVX-512 CPU) — enough to flip a sampled token at step 2 on some CPUs and not on others,
    so later steps' rollouts agree by chance only."""
    from safetensors.torch import load_file

    fsdp = {"enabled": True}
    # FSDP's hf sampling is a collective (serial); so is the one-process run it is compared with
    serial: dict[str, Any] = {"max_async_level": 0, "checkpoints": {"interval": 1}}
    _launch(
        tmp_path, [*LAUNCH, "-m", "rltrain", "--config", str(_config(tmp_path, "fsdp", fsdp=fsdp, **serial))]
    )
    _launch(tmp_path, ["-m", "rltrain", "--config", str(_config(tmp_path, "one", max_steps=1, **serial))])
    rows2 = read_jsonl(tmp_path / "runs" / "fsdp" / "metrics.jsonl")
    (r1,) = read_jsonl(tmp_path / "runs" / "one" / "metrics.jsonl")
    assert [r["step"] for r in rows2] == [1, 2, 3]
    assert {k: r1[k] for k in SAME} == {k: rows2[0][k] for k in SAME}  # the same rollouts, before any update
    assert rows2[0]["grad_norm"] == pytest.approx(r1["grad_norm"], rel=1e-4)  # the same gradient
    runs = tmp_path / "runs"
    first = "checkpoints/step_1/adapter_model.safetensors"
    a, one = load_file(str(runs / "fsdp" / first)), load_file(str(runs / "one" / first))
    assert a.keys() == one.keys() and max(float((a[k] - one[k]).abs().max()) for k in a) < 1e-4
    assert _record(tmp_path, "fsdp")["status"] == "succeeded"
    # resume the sharded run from its step-2 checkpoint (gathered adapter, whole optimizer state)
    shutil.copytree(runs / "fsdp", runs / "again")
    shutil.rmtree(runs / "again" / "checkpoints" / "step_3")
    _launch(tmp_path, [*LAUNCH, "-m", "rltrain", "--resume", str(runs / "again")])
    final = "checkpoints/step_3/adapter_model.safetensors"
    a, b = load_file(str(runs / "fsdp" / final)), load_file(str(runs / "again" / final))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_node_launch_as_two_machines_on_this_host(tmp_path: Path) -> None:
    """The README's two-node command, machine_rank 0 and 1 both on localhost, one process each."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cfg = _config(tmp_path, "nodes", max_steps=2, fsdp={"enabled": True})
    nodes = [
        subprocess.Popen(
            [sys.executable, *LAUNCH[:2], "--multi_gpu", "--num_machines", "2", "--machine_rank", str(rank)]
            + ["--main_process_ip", "127.0.0.1", "--main_process_port", port, "--num_processes", "2"]
            + [*LAUNCH[-4:], "-m", "rltrain", "--config", str(cfg)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    rows = read_jsonl(tmp_path / "runs" / "nodes" / "metrics.jsonl")
    assert [(r["step"], r["world_size"]) for r in rows] == [(1, 2.0), (2, 2.0)]
    assert _record(tmp_path, "nodes")["status"] == "succeeded"


FAILING = """
import sys
import rltrain.run as run

real = run._update
calls = {"n": 0}


def flaky(engine, rollouts, dist):
    calls["n"] += 1
    if dist.rank == 1 and calls["n"] == 2:
        raise ValueError("injected failure on rank 1")
    return real(engine, rollouts, dist)


run._update = flaky
from rltrain.__main__ import main

sys.exit(main())
"""


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_a_failing_rank_fails_the_run_everywhere(tmp_path: Path, fsdp: bool) -> None:
    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    # under FSDP rank 0 is inside one of FSDP's own collectives when rank 1 dies
    cfg = _config(tmp_path, "bad", max_steps=6, fsdp={"enabled": fsdp})
    proc = subprocess.Popen(
        [sys.executable, *LAUNCH, str(script), "--config", str(cfg)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    metrics = tmp_path / "runs" / "bad" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not read_jsonl(metrics) and proc.poll() is None:
        time.sleep(0.1)
    failed_at = time.time()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, out[-3000:]
    assert time.time() - failed_at < 30, "the surviving rank hung"
    record = _record(tmp_path, "bad")
    assert record["status"] == "failed"
    assert "rank 1" in record["error"] and "injected failure" in record["error"]
    assert record["metrics"]["step"] == 1


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_processes_each_with_a_vllm_engine(tmp_path: Path, fsdp: bool) -> None:
    pytest.importorskip("vllm")
    cfg = _config(tmp_path, "vllm2", max_steps=2, rollout={"backend": "vllm"}, fsdp={"enabled": fsdp})
    two = subprocess.run(
        [sys.executable, *LAUNCH, "-m", "rltrain", "--config", str(cfg)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    rows = read_jsonl(tmp_path / "runs" / "vllm2" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["landed_probe_diff"] < 1e-3  # rank 0's engine took the adapter; rank 1 checked its own too
    assert _record(tmp_path, "vllm2")["status"] == "succeeded"


def test_sigterm_to_the_launcher_cancels_with_a_final_checkpoint(tmp_path: Path) -> None:
    import signal

    cfg = _config(tmp_path, "term", max_steps=40, checkpoints={"interval": 0})
    proc = subprocess.Popen(
        [sys.executable, *LAUNCH, "-m", "rltrain", "--config", str(cfg)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = tmp_path / "runs" / "term" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and len(read_jsonl(metrics)) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    record = _record(tmp_path, "term")
    assert record["status"] == "cancelled"
    last = Path(record["checkpoints"][-1])
    assert (last / "COMPLETE").is_file() and int(last.name[5:]) == record["metrics"]["step"] >= 2


def _two_ranks(tmp_path: Path) -> list[Dist]:
    """Two ranks' abort sides sharing a run directory (no process group needed to abort)."""
    ranks = [Dist(), Dist()]
    for rank, d in enumerate(ranks):
        d.rank, d.world, d.abort_path = rank, 2, tmp_path / ".abort"
    return ranks


def test_the_first_rank_to_abort_names_the_runs_error(tmp_path: Path) -> None:
    ranks = _two_ranks(tmp_path)
    assert ranks[1].abort("ValueError: injected") == "rank 1: ValueError: injected"
    # the marker carries the message, so every rank reports the same one
    assert (tmp_path / ".abort").read_text() == "rank 1: ValueError: injected\n"
    # a rank failing next, inside a collective, reports the first failure rather than its own
    assert ranks[0].abort("RuntimeError: gloo connection closed") == "rank 1: ValueError: injected"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".abort"]


def test_abort_works_on_a_filesystem_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    ranks = _two_ranks(tmp_path)
    assert ranks[1].abort("ValueError: injected") == "rank 1: ValueError: injected"
    assert ranks[0].abort("RuntimeError: peer gone") == "rank 1: ValueError: injected"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".abort"]


@pytest.mark.slow
def test_a_guard_rolls_back_every_rank_alike(tmp_path: Path) -> None:
    """The main rank watches and decides; both ranks restore the same checkpoint (their weights stay
    in sync: each step's checksum compares them) and stop at the same step."""
    fixture = Path(__file__).parent / "fixtures" / "envs" / "pays_length.py"
    guard = {"signal": "truncation", "action": "rollback", "window": 2, "max_rollbacks": 1}
    cfg = _config(
        tmp_path,
        "guarded",
        max_steps=16,
        batch_size=16,
        max_async_level=0,
        sampling={"max_tokens": 32},
        env=[{"id": str(fixture)}],
        checkpoints={"interval": 1},
        guards=[guard],
    )
    proc = subprocess.run(
        [sys.executable, *LAUNCH, "-m", "rltrain", "--config", str(cfg)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    record = _record(tmp_path, "guarded")
    assert record["status"] == "failed", proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "already rolled back 1 times" in record["error"]
    rows = read_jsonl(tmp_path / "runs" / "guarded" / "metrics.jsonl")
    decisions = [r["guard_decision"]["action"] for r in rows if "guard_decision" in r]
    assert decisions == ["rollback", "stop"] and rows[-1]["step"] < 16
    assert all(r["lora_checksum"] > 0 for r in rows)  # ranks agreed at every step, rollback included
