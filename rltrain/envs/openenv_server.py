"""An OpenEnv server for a run: started here in its own interpreter, or one already running at a URL; and
how the model's replies become its actions.

`OpenEnvServer.start(path, python)` runs `python -m uvicorn APP --host 127.0.0.1 --port FREE` in the
environment's folder (APP from its openenv.yaml, `server.app:app` as `openenv init` writes it), waits for
`/health` and stops it with the run (and if the trainer dies: the server gets SIGTERM). `connect(url)`
checks `/health` of a server someone else runs. Both read `/schema` for the action's JSON schema.

Standard library only (urllib); never imports torch or openenv: the server's packages live in its venv.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_APP = "server.app:app"  # what `openenv init` writes into openenv.yaml


class OpenEnvError(RuntimeError):
    """The OpenEnv server failed or refused; the message names the server and why."""


def _get_json(url: str, timeout_s: float) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _app_of(path: Path) -> str:
    """The ASGI app openenv.yaml names (`app: server.app:app`), read without a YAML parser."""
    spec = path / "openenv.yaml"
    if spec.is_file():
        found = re.search(r"^app:\s*['\"]?([\w.]+:[\w.]+)", spec.read_text(), re.MULTILINE)
        if found:
            return found.group(1)
    return DEFAULT_APP


def _die_with_parent() -> None:
    """In the server's process: SIGTERM when the trainer dies, however it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class OpenEnvServer:
    """A server's base URL, and its process when this run started it."""

    def __init__(
        self, url: str, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
    ) -> None:
        self.url, self.proc, self.log = url.rstrip("/"), proc, log

    @property
    def ws_url(self) -> str:
        return re.sub(r"^http", "ws", self.url) + "/ws"

    @classmethod
    def start(
        cls, path: str | Path, python: str, app: str | None = None, timeout_s: float = 120.0
    ) -> OpenEnvServer:
        folder = Path(path).expanduser().resolve()
        if not folder.is_dir():
            raise OpenEnvError(f"openenv path {path}: no such folder")
        port, app = _free_port(), app or _app_of(folder)
        log = Path(tempfile.mkstemp(prefix="openenv-", suffix=".log")[1])
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [python, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)],
                cwd=folder, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        server = cls(f"http://127.0.0.1:{port}", proc, log)
        try:
            server.wait_healthy(timeout_s)
        except BaseException:
            server.stop()
            raise
        return server

    @classmethod
    def connect(cls, url: str, timeout_s: float = 30.0) -> OpenEnvServer:
        server = cls(url)
        server.wait_healthy(timeout_s)
        return server

    def _log_tail(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines() if self.log else []
        return " | ".join(lines[-3:])

    def wait_healthy(self, timeout_s: float) -> None:
        deadline, last = time.monotonic() + timeout_s, ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise OpenEnvError(
                    f"OpenEnv server exited with status {self.proc.returncode} at start: {self._log_tail()}"
                )
            try:
                if _get_json(f"{self.url}/health", 2.0).get("status") == "healthy":
                    return
            except (OSError, ValueError) as err:  # not listening yet
                last = str(err)
            time.sleep(0.2)
        raise OpenEnvError(f"OpenEnv server {self.url}: no healthy /health within {timeout_s:g}s ({last})")

    def action_schema(self) -> dict[str, Any]:
        try:
            schema = _get_json(f"{self.url}/schema", 30.0)
        except (OSError, ValueError) as err:
            raise OpenEnvError(f"OpenEnv server {self.url}: GET /schema failed: {err}") from None
        if not isinstance(schema, dict) or not isinstance(schema.get("action"), dict):
            raise OpenEnvError(f"OpenEnv server {self.url}: /schema has no action schema")
        return schema["action"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log is not None:
            self.log.unlink(missing_ok=True)

    def __enter__(self) -> OpenEnvServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {"string": str, "integer": int, "number": (int, float)}
_JSON_TYPES |= {"boolean": bool, "object": dict, "array": list}


class ActionMapper:
    """The model's reply as an action, from the action's JSON schema: an action with one string field
    takes the reply text; any other must be a JSON object of its fields (a ```json fence is allowed)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.fields: dict[str, Any] = {
            k: v for k, v in schema.get("properties", {}).items() if k != "metadata"
        }
        self.required = [k for k in schema.get("required", []) if k in self.fields]
        self.closed = schema.get("additionalProperties") is False
        only = list(self.fields.values())[0] if len(self.fields) == 1 else {}
        self.text_field = next(iter(self.fields)) if only.get("type") == "string" else None

    def instructions(self) -> str:
        """What to tell the model of the action's shape (nothing when the reply text is the action)."""
        if self.text_field is not None:
            return ""
        shape = ", ".join(f'"{k}": {v.get("type", "value")}' for k, v in self.fields.items())
        return f"Reply with a JSON object for your action: {{{shape}}}."

    def to_action(self, reply: str) -> dict[str, Any]:
        """The action for `reply`; ValueError with a message for the model when it is not one."""
        if self.text_field is not None:
            return {self.text_field: reply}
        text = reply.strip()
        fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
        try:
            action = json.loads(fenced.group(1) if fenced else text)
        except json.JSONDecodeError as err:
            raise ValueError(f"your reply is not JSON ({err.msg}). {self.instructions()}") from None
        if not isinstance(action, dict):
            raise ValueError(f"your reply must be a JSON object. {self.instructions()}")
        missing = [k for k in self.required if k not in action]
        unknown = [k for k in action if k not in self.fields] if self.closed else []
        wrong = [
            k
            for k, v in action.items()
            if k in self.fields and not isinstance(v, _JSON_TYPES.get(self.fields[k].get("type", ""), object))
        ]
        if missing or unknown or wrong:
            parts = [f"{name}: {', '.join(keys)}" for name, keys in
                     (("missing", missing), ("unknown", unknown), ("wrong type", wrong)) if keys]  # fmt: skip
            raise ValueError(f"your action has {'; '.join(parts)}. {self.instructions()}")
        return action


def observation_text(observation: dict[str, Any]) -> str:
    """An observation as the user message: its one field's text, else its fields as JSON."""
    fields = {k: v for k, v in observation.items() if k != "metadata"}
    if len(fields) == 1 and isinstance(next(iter(fields.values())), str):
        return str(next(iter(fields.values())))
    return json.dumps(fields, ensure_ascii=False)
