"""`python -m rltrain serve [--host H] [--port P] [--runs DIR] [--key-file F]`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from rltrain.serve.auth import ENV, KeySetupError, default_key_file, is_loopback, load_key


def _fail(msg: str) -> int:
    print(f"rltrain serve: {msg}", file=sys.stderr)
    return 2


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rltrain serve",
        description="Serve the runs directory: prime's Hosted Training API "
        "(PRIME_API_BASE_URL=http://HOST:PORT prime train list) and a dashboard at /. "
        "Every route needs the key.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need "
                        f"{ENV})")  # fmt: skip
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free port)")
    parser.add_argument(
        "--runs", metavar="DIR", default=os.environ.get("RLTRAIN_RUNS", "runs"),
        help="runs directory (default $RLTRAIN_RUNS or runs)",
    )  # fmt: skip
    parser.add_argument(
        "--key-file", type=Path, default=None,
        help=f"where the key is kept when {ENV} is unset (default {default_key_file()}; created mode 0600)",
    )  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser.parse_args(argv)


def cmd_serve(argv: list[str]) -> int:
    import logging

    args = parse(argv)
    if not is_loopback(args.host) and not os.environ.get(ENV):
        return _fail(f"--host {args.host} is not a loopback address: set {ENV} (a key you chose) to serve it")
    try:
        key, source = load_key(args.key_file or default_key_file())
    except (KeySetupError, OSError) as err:
        return _fail(str(err))
    if args.verbose:
        logging.getLogger("rltrain.serve").setLevel(logging.DEBUG)
    from rltrain.serve.server import make_server

    root = Path(args.runs)
    try:
        server = make_server(root, args.host, args.port, key)
    except OSError as err:
        return _fail(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}")
    host, port = str(server.server_address[0]), int(server.server_address[1])

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()  # shutdown() waits for serve_forever

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    where = f"${ENV}" if source == ENV else f"the file {source}"
    print(
        f"rltrain serve: http://{host}:{port}/ (runs in {root.resolve()}; the key is in {where})", flush=True
    )
    print(
        f"rltrain serve: PRIME_API_BASE_URL=http://{host}:{port} PRIME_API_KEY=<key> prime train list",
        flush=True,
    )
    with server:
        server.serve_forever(poll_interval=0.2)
    print("rltrain serve: stopped", flush=True)
    return 0
