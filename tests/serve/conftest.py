"""The server in this process (a thread) over a runs directory of made-up runs, and a small client."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rltrain.record import RunRecord, append_jsonl
from rltrain.serve.server import Server, make_server

KEY = "test-key-0123456789abcdef"


def fake_run(root: Path, run_id: str, status: str = "succeeded", steps: int = 3) -> Path:
    """A run directory as the recorder leaves it: record, metrics rows, rollouts, a checkpoint."""
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    config = {"model": "builtin:tiny", "max_steps": 10, "batch_size": 4, "rollouts_per_example": 2,
              "env": [{"id": "digits", "name": None}], "sampling": {"max_tokens": 8}}  # fmt: skip
    rec = RunRecord.create(
        run_dir, run_id=run_id, base_model="builtin:tiny", environment="digits", config=config,
        team_id=None, status=status,
    )  # fmt: skip
    (run_dir / "rollouts").mkdir()
    for step in range(1, steps + 1):
        append_jsonl(run_dir / "metrics.jsonl", {"step": step, "reward_mean": step / 10, "loss": 0.5})
        prompt = [{"role": "user", "content": f"say {step}"}]
        rows = [{"group": 0, "env": "digits", "prompt": prompt, "completion": f"{step}{i}", "reward": i / 4,
                 "advantage": i - 1.5, "finish": "stop"} for i in range(4)]  # fmt: skip
        (run_dir / "rollouts" / f"step_{step}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ckpt = run_dir / "checkpoints" / f"step_{steps}"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(b"x" * 100)
    (ckpt / "COMPLETE").write_text("")
    last = {"step": steps, "reward_mean": steps / 10}
    usage = {"input_tokens": 100, "output_tokens": 50, "training_tokens": 120, "cost_usd": 0.25}
    rec.update(last, usage, [str(ckpt)])
    return run_dir


@dataclass
class Live:
    root: Path
    server: Server

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def call(
        self, method: str, path: str, body: bytes | dict[str, Any] | None = None, key: str | None = KEY,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, http.client.HTTPResponse]:  # fmt: skip
        """(status, parsed JSON or text, response) of one request on a fresh connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        conn.request(method, path, body=data, headers=sent)
        res = conn.getresponse()
        raw = res.read()
        conn.close()
        ctype = res.getheader("Content-Type") or ""
        return res.status, json.loads(raw) if ctype.startswith("application/json") else raw.decode(), res


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    root = tmp_path / "runs"
    root.mkdir()
    server = make_server(root, "127.0.0.1", 0, KEY)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield Live(root, server)
    server.shutdown()
    server.server_close()
