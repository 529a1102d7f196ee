"""Reading a W&B run back from its offline files (runs/<id>/wandb/offline-run-*/run-<id>.wandb).

wandb 0.31 writes them from its Go core and ships no Python reader; the format is LevelDB's log
(32 KiB blocks of records with a 7-byte header: crc32, length, type) after a 7-byte `:W&B` file header,
each record a `wandb_internal_pb2.Record` protobuf.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> list[bytes]:
    assert data[:4] == b":W&B", "not a .wandb file"
    out, pos, pending = [], HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind in (MIDDLE, LAST):
            pending += chunk
            if kind == LAST:
                out.append(pending)
        elif kind == 0 and length == 0:  # zero padding
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
    return out


def read_run(path: Path) -> dict[str, Any]:
    """{"id", "history": [rows], "config": {...}, "summary": {...}} of one .wandb file."""
    from wandb.proto import wandb_internal_pb2 as pb

    run: dict[str, Any] = {"history": [], "config": {}, "summary": {}, "id": None, "exited": False}
    for payload in _payloads(path.read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run["id"] = rec.run.run_id
            run["config"] |= {i.key: json.loads(i.value_json) for i in rec.run.config.update}
        elif kind == "history":
            items = rec.history.item
            run["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items})
        elif kind == "exit":
            run["exited"] = True
        elif kind == "config":
            run["config"] |= {i.key: json.loads(i.value_json) for i in rec.config.update}
        elif kind == "summary":
            items = rec.summary.update
            run["summary"] |= {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}
    return run


def offline_runs(run_dir: Path, expect: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    """The `expect` offline W&B runs written under a run directory, oldest first (a resume writes
    another). wandb's service process writes the file: `finish()` can return before its last records
    are on disk, so this waits until each file has its run and its exit record."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
        runs = [read_run(f) for f in files]
        if len(runs) == expect and all(r["id"] and r["exited"] for r in runs) or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)
