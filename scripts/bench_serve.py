"""`serve` under load: 50 clients polling a training run's metrics and rollouts, and what that costs the run.

    .venv/bin/python scripts/bench_serve.py [--pairs 2] [--seconds 60] [--clients 50] [--interval 1.0]

One `python -m rltrain serve` runs throughout. Tiny-model runs train one after another, unwatched and
watched interleaved (U, W, U, W, ...: other work on a shared machine drifts, and interleaving spreads
the drift over both). While a watched run trains, each client polls as the dashboard does, every
`--interval` seconds (the dashboard: 2 s): the run's progress, its new metrics rows (the whole history
on the first poll, then `min_step`), and the latest step's rollouts (50 samples). Reported:
requests/s, p50/p99 latency, and the median step time of each run over the same window. Then a
saturation phase (the last run's whole metrics history and rollouts, no sleeps, no run training) gives
the stack's ceiling on the heavy path. The clients run in this process, on the same cores as the run:
their CPU is part of the cost measured (they parse only the small progress answer).
Writes docs/bench_serve.json; docs/benchmarks.md quotes it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-key-0123456789abcdef"
CONFIG = """model = "builtin:tiny"
max_steps = 100000
batch_size = 16
rollouts_per_example = 8
learning_rate = 1e-2
max_async_level = 0
[sampling]
max_tokens = 16
[[env]]
id = "digits"
[rollout]
backend = "hf"
[run]
id = "{run_id}"
output_dir = "{root}"
progress = false
tensorboard = false
"""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Load:
    """`clients` threads, each on its own keep-alive connection, polling until stopped."""

    def __init__(self, port: int, run_id: str, clients: int, interval: float, server_pid: int = 0) -> None:
        self.port, self.run_id, self.interval, self.server_pid = port, run_id, interval, server_pid
        self.latencies: list[float] = []
        self.errors = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]

    def get(self, conn: http.client.HTTPConnection, path: str) -> bytes | None:
        start = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": f"Bearer {KEY}"})
        res = conn.getresponse()
        body = res.read()
        self.latencies.append(time.perf_counter() - start)
        if res.status != 200:
            self.errors += 1
            return None
        return body

    def client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        base = f"/api/v1/rft/runs/{self.run_id}"
        seen = -1  # the last metrics step this client has; -1: none yet (and, saturating, always)
        while not self.stop.is_set():
            progress = json.loads(self.get(conn, f"{base}/progress") or b"{}")
            steps = progress.get("stepsWithSamples") or [1]
            self.get(conn, f"{base}/metrics?min_step={seen + 1}")
            self.get(conn, f"{base}/samples?step={steps[-1]}&limit=50")
            if self.interval:
                seen = progress.get("latestStep") or seen
                self.stop.wait(self.interval)
        conn.close()

    def run(self, seconds: float) -> dict[str, float]:
        start = time.perf_counter()
        cpu = (cpu_seconds(self.server_pid), time.process_time())
        for t in self.threads:
            t.start()
        time.sleep(seconds)
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
        elapsed = time.perf_counter() - start
        lat = sorted(self.latencies)
        return {  # CPU: core-seconds per second of the window, the server's and the clients'
            "server_cpu": (cpu_seconds(self.server_pid) - cpu[0]) / elapsed,
            "clients_cpu": (time.process_time() - cpu[1]) / elapsed,
            "requests": len(lat),
            "errors": self.errors,
            "requests_per_s": len(lat) / elapsed,
            "p50_ms": 1000 * lat[len(lat) // 2] if lat else 0.0,
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0,
        }


def one_run(
    root: Path, run_id: str, args: argparse.Namespace, server: tuple[int, int] | None
) -> dict[str, Any]:
    config = root / f"{run_id}.toml"
    config.write_text(CONFIG.format(run_id=run_id, root=root))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "rltrain", "--config", str(config)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = root / run_id
    while len(rows(run_dir)) < 3:  # past start-up and the first steps
        if proc.poll() is not None:
            raise RuntimeError(f"run {run_id} exited with {proc.returncode}")
        time.sleep(0.2)
    first = len(rows(run_dir))
    load = (
        Load(server[0], run_id, args.clients, args.interval, server[1]).run(args.seconds) if server else None
    )
    if load is None:
        time.sleep(args.seconds)
    last = len(rows(run_dir))
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=300)
    window = rows(run_dir)[first:last]
    step_s = [r["step_s"] for r in window]
    return {"run": run_id, "watched": server is not None, "steps": len(window), "load": load,
            "median_step_s": statistics.median(step_s), "mean_step_s": statistics.fmean(step_s)}  # fmt: skip


def start_server(root: Path) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "RLTRAIN_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "rltrain", "serve", "--port", "0", "--runs", str(root)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, int(line.split()[2].rstrip("/").rsplit(":", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument(
        "--saturate", type=float, default=15.0, help="seconds of the no-sleep phase (0: skip)"
    )
    parser.add_argument("--out", default=str(REPO / "docs" / "bench_serve.json"))
    args = parser.parse_args()
    uptime = lambda: Path("/proc/loadavg").read_text().split()[:3]  # noqa: E731
    results: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "args": vars(args),
                               "loadavg_start": uptime(), "cpus": os.cpu_count(), "runs": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server, port = start_server(root)
        try:
            for i in range(args.pairs):
                for watched in (False, True):
                    watch = (port, server.pid) if watched else None
                    out = one_run(root, f"{'w' if watched else 'u'}{i}", args, watch)
                    out["loadavg"] = uptime()
                    results["runs"].append(out)
                    print(json.dumps(out), flush=True)
            if args.saturate:
                results["saturated"] = Load(port, "w0", args.clients, 0.0, server.pid).run(args.saturate)
                print(json.dumps({"saturated": results["saturated"]}), flush=True)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    results["loadavg_end"] = uptime()
    med = {
        w: statistics.median(r["median_step_s"] for r in results["runs"] if r["watched"] == w) for w in (0, 1)
    }
    results["watched_over_unwatched"] = med[1] / med[0]
    print(f"step time watched / unwatched: {results['watched_over_unwatched']:.3f}")
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
