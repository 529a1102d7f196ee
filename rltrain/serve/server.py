"""The HTTP layer: stdlib `ThreadingHTTPServer`, one thread per connection (see rltrain/serve/__init__.py
for why not aiohttp or FastAPI). Every answer is JSON except the dashboard's files; every route but the
login page needs the key (rltrain/serve/auth.py). Bad requests get a 4xx JSON body naming the problem,
never a traceback: an unexpected error is logged here and answered with a plain 500.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

from rltrain.record import finite
from rltrain.serve.api import ROUTES, Api, ApiError
from rltrain.serve.auth import Guard, session_cookie
from rltrain.serve.store import RunNotFound, RunUnreadable

log = logging.getLogger("rltrain.serve")
MAX_BODY = 1 << 20  # 1 MiB: a config is a few KiB
CSRF_HEADER = "X-Rltrain-Request"  # cookie-authenticated writes must carry it (a form cannot set it)
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript",
    ".css": "text/css",
    ".txt": "text/plain",
}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
}


def _static() -> dict[str, bytes]:
    folder = resources.files("rltrain.serve").joinpath("static")
    return {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    server_version = "rltrain-serve"
    sys_version = ""
    timeout = 60  # an idle keep-alive connection gives its thread back after this
    # headers and body go out in two writes: with Nagle's algorithm the body waits for the client's
    # delayed ACK of the headers, 40 ms on Linux (measured: p50 44 ms at 130 req/s, before this)
    disable_nagle_algorithm = True
    api: Api
    guard: Guard
    files: dict[str, bytes]

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own errors (a malformed request line, headers too long...) as JSON too."""
        self.close_connection = True
        self._json(code, {"detail": message or self.responses.get(code, ("error",))[0]})

    # --- answering --------------------------------------------------------------------------------
    def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        body = json.dumps(finite(payload), allow_nan=False, default=str).encode()
        self._send(code, body, "application/json", headers)

    # --- requests ---------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        try:
            self._handle()
        except ApiError as err:
            self._json(err.status, {"detail": err.detail})
        except RunNotFound as err:
            self._json(404, {"detail": f"no run {str(err)[:200]!r}"})
        except RunUnreadable as err:
            self._json(503, {"detail": str(err)})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            log.error("serve: %s %s failed:\n%s", self.command, self.path[:200], traceback.format_exc())
            self.close_connection = True
            self._json(500, {"detail": "internal error (the server's log has the details)"})

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ApiError(411, "send a Content-Length body (chunked bodies are not accepted)")
        raw = self.headers.get("Content-Length") or "0"
        if not raw.isdigit():
            self.close_connection = True
            raise ApiError(400, f"Content-Length: {raw[:20]!r} is not a length")
        if int(raw) > MAX_BODY:
            self.close_connection = True  # the body stays unread: this connection cannot go on
            raise ApiError(413, f"body of {int(raw)} bytes is over the {MAX_BODY}-byte limit")
        return self.rfile.read(int(raw))

    def _authed(self, write: bool) -> bool:
        if self.guard.bearer_ok(self.headers.get("Authorization")):
            return True
        # a cookie rides along on any request the browser makes; a write must also prove it is the page's
        return self.guard.session_ok(self.headers.get("Cookie")) and (
            not write or bool(self.headers.get(CSRF_HEADER))
        )

    def _handle(self) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        body = self._body()
        if path == "/login" and self.command == "POST":
            return self._login(body)
        if path in ("/", "/index.html") and self.command == "GET":
            page = "index.html" if self._authed(write=False) else "login.html"
            return self._send(200, self.files[page], TYPES[".html"])
        if not self._authed(write=self.command != "GET"):
            raise ApiError(401, "missing or wrong key: send Authorization: Bearer KEY (or log in at /)")
        if path.startswith("/static/") and self.command == "GET":
            name = path.removeprefix("/static/")
            if name not in self.files:
                raise ApiError(404, "no such file")
            return self._send(200, self.files[name], TYPES.get(Path(name).suffix, "application/octet-stream"))
        if path == "/logout" and self.command == "POST":
            self.guard.end_session(self.headers.get("Cookie"))
            return self._json(200, {"loggedOut": True}, {"Set-Cookie": session_cookie("") + "; Max-Age=0"})
        self._route(path, url.query, body)

    def _route(self, path: str, query_text: str, body: bytes) -> None:
        try:
            query = dict(parse_qsl(query_text, keep_blank_values=True, max_num_fields=50))
        except ValueError as err:
            raise ApiError(400, f"query: {err}") from None
        payload: Any = None
        if body:
            try:
                payload = json.loads(body)
            except ValueError as err:  # also a body that is not UTF-8
                raise ApiError(400, f"body: not JSON ({err})") from None
        methods = set()
        for method, pattern, handler in ROUTES:
            m = pattern.match(path)
            if m is None:
                continue
            methods.add(method)
            if method == self.command:
                code, reply = handler(self.api, m.groupdict().get("id") or "", query, payload)
                if isinstance(reply, bytes):
                    return self._send(code, reply, "application/json")
                return self._json(code, reply)
        if methods:
            raise ApiError(405, f"{self.command} is not allowed here (allowed: {', '.join(sorted(methods))})")
        raise ApiError(404, f"no route {path[:200]!r}")

    def _login(self, body: bytes) -> None:
        form = parse_qs(body.decode(errors="replace"), max_num_fields=5)
        if self.guard.key_ok((form.get("key") or [""])[0].strip()):
            cookie = session_cookie(self.guard.new_session())
            return self._send(303, b"", TYPES[".txt"], {"Location": "/", "Set-Cookie": cookie})
        time.sleep(0.2)  # a guesser gets five tries a second per connection
        page = self.files["login.html"].replace(b"<!--error-->", b'<p class="error">Wrong key.</p>')
        self._send(401, page, TYPES[".html"])


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a client holding a connection open never keeps the server from exiting
    request_queue_size = 128


def make_server(root: Path, host: str, port: int, key: str) -> Server:
    """A server bound to host:port (port 0: any free port) over the runs in `root`."""
    attrs = {"api": Api(root), "guard": Guard(key), "files": _static()}
    handler = type("BoundHandler", (Handler,), attrs)
    return Server((host, port), handler)
