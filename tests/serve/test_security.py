"""Bad input: no key, a wrong key, a forged cookie write, traversal, huge and malformed bodies, a garbled
request line, a run deleted mid-request, a record rewritten while read; the key file; the bind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from rltrain.record import RunRecord
from rltrain.serve.auth import KeySetupError, load_key
from rltrain.serve.cli import cmd_serve
from tests.serve.conftest import KEY, Live, fake_run


def test_every_route_needs_the_key(live: Live) -> None:
    fake_run(live.root, "r")
    for key in (None, "", "wrong-key-0123456789abcdef", KEY + "x"):
        for method, path in [("GET", "/api/v1/rft/runs"), ("GET", "/api/v1/rft/runs/r/metrics"),
                             ("PUT", "/api/v1/rft/runs/r/stop"), ("GET", "/static/app.js")]:  # fmt: skip
            code, body, _ = live.call(method, path, key=key)
            assert code == 401 and "key" in body["detail"], (key, path)
    assert live.call("GET", "/api/v1/rft/runs", headers={"Authorization": f"Basic {KEY}"}, key=None)[0] == 401
    code, page, _ = live.call("GET", "/", key=None)
    assert code == 200 and 'action="/login"' in page  # the login page, nothing else


def test_login_sets_a_strict_httponly_cookie_and_writes_need_the_page_header(live: Live) -> None:
    fake_run(live.root, "q", "queued", steps=0)
    code, text, res = live.call("POST", "/login", body=b"key=wrong", key=None)
    assert code == 401 and "Wrong key" in text and res.getheader("Set-Cookie") is None
    code, _, res = live.call("POST", "/login", body=f"key={KEY}".encode(), key=None)
    cookie = res.getheader("Set-Cookie") or ""
    assert code == 303 and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    session = {"Cookie": cookie.split(";")[0]}
    assert live.call("GET", "/api/v1/rft/runs", key=None, headers=session)[0] == 200
    assert "runs-table" in live.call("GET", "/", key=None, headers=session)[1]
    assert live.call("PUT", "/api/v1/rft/runs/q/stop", key=None, headers=session)[0] == 401  # a forged form
    page = {**session, "X-Rltrain-Request": "1"}
    assert live.call("PUT", "/api/v1/rft/runs/q/stop", key=None, headers=page)[0] == 200
    assert (
        live.call("GET", "/api/v1/rft/runs", key=None, headers={"Cookie": "rltrain_session=forged"})[0] == 401
    )


@pytest.mark.parametrize(
    "path",
    ["/api/v1/rft/runs/..", "/api/v1/rft/runs/..%2F..%2Fetc", "/api/v1/rft/runs/%2Fetc%2Fpasswd/metrics",
     "/api/v1/rft/runs/../runs/r", "/api/v1/rft/runs/r%00", "/static/../server.py", "/static/%2E%2E/api.py",
     "/api/v1/rft/runs/.deleted/metrics"],
)  # fmt: skip
def test_traversal_is_not_found(live: Live, path: str) -> None:
    fake_run(live.root, "r")
    code, body, _ = live.call("GET", path)
    assert code == 404 and isinstance(body, dict) and "detail" in body


def test_huge_and_malformed_bodies_and_queries_are_4xx_json(live: Live) -> None:
    # refused on its Content-Length, before a byte of it is read (the client may see a broken pipe)
    head = f"POST /api/v1/training/runs HTTP/1.1\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {2 << 20}"
    code, body = _raw(live, head.encode() + b"\r\n\r\n" + b"{" * 1024)
    assert code == 413 and "limit" in body["detail"]
    assert live.call("POST", "/api/v1/training/runs", body=b'{"config": ')[0] == 400
    assert live.call("POST", "/api/v1/training/runs", body=b"\xff\xfe")[0] == 400
    assert live.call("POST", "/api/v1/training/runs", body={"config": "x"})[0] == 400
    assert live.call("POST", "/api/v1/training/runs", body={"config": {"max_steps": "many"}})[0] == 422
    fake_run(live.root, "r")
    for bad in ("page=0", "limit=x", "min_step=1e9", "step=", "type=other"):
        code, body, _ = live.call("GET", f"/api/v1/rft/runs/r/samples?{bad}")
        assert code == 400 and body["detail"], bad
    assert live.call("PATCH", "/api/v1/rft/runs/r")[0] == 501
    assert live.call("POST", "/api/v1/rft/runs/r")[0] == 405
    assert live.call("GET", "/api/v2/nothing")[0] == 404


def _raw(live: Live, request: bytes) -> tuple[int, dict[str, object]]:
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as s:
        s.sendall(request)
        chunks = []  # every error answer closes the connection: read to its end
        while chunk := s.recv(65536):
            chunks.append(chunk)
        reply = b"".join(chunks).decode(errors="replace")
    head, _, body = reply.partition("\r\n\r\n")
    assert "Traceback" not in reply
    return int(head.split()[1]), json.loads(body)


def test_a_garbled_request_is_json_not_a_traceback(live: Live) -> None:
    code, body = _raw(live, b"GET /\x00 \xff/ HTTP/1.1\r\n\r\n")
    assert code == 400 and body["detail"]
    code, body = _raw(live, b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n")
    assert code == 431
    code, body = _raw(live, b"GET /api/v1/rft/runs HTTP/1.1\r\nContent-Length: -5\r\n\r\n")
    assert code == 400 and "Content-Length" in str(body["detail"])
    code, body = _raw(live, b"POST /login HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert code == 411


def _hammer(live: Live, path: str, seconds: float) -> list[int]:
    codes: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        code, body, _ = live.call("GET", path)
        assert isinstance(body, dict), body
        codes.append(code)
    return codes


def test_a_run_deleted_mid_request_is_not_found_and_a_rewritten_record_always_parses(live: Live) -> None:
    run_dir = fake_run(live.root, "r", "running")
    rec = RunRecord.load(run_dir)
    stop = threading.Event()

    def rewrite() -> None:  # the recorder's atomic rewrite, and a writer that is not atomic
        while not stop.is_set():
            rec.update({"step": 1}, {}, [])
            (run_dir / "run.json").write_text(json.dumps(rec.data))

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        codes = _hammer(live, "/api/v1/rft/runs/r", 1.5)
    finally:
        stop.set()
        writer.join()
    assert set(codes) <= {200, 503} and codes.count(200) > len(codes) // 2, codes
    threading.Timer(0.3, shutil.rmtree, args=(run_dir,)).start()
    codes = _hammer(live, "/api/v1/rft/runs/r/metrics", 1.0) + _hammer(
        live, "/api/v1/rft/runs/r/samples?step=1", 0.2
    )
    assert set(codes) <= {200, 404} and codes[-1] == 404, codes


def test_the_key_file_is_made_private_and_a_readable_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RLTRAIN_API_KEY", raising=False)
    key, source = load_key(tmp_path / "k" / "api_key")
    assert len(key) >= 32 and source.endswith("api_key")
    assert stat.S_IMODE(os.stat(tmp_path / "k" / "api_key").st_mode) == 0o600
    assert load_key(tmp_path / "k" / "api_key")[0] == key  # the same key at the next start
    os.chmod(tmp_path / "k" / "api_key", 0o644)
    with pytest.raises(KeySetupError, match="others may read it"):
        load_key(tmp_path / "k" / "api_key")
    monkeypatch.setenv("RLTRAIN_API_KEY", "short")
    with pytest.raises(KeySetupError, match="shorter than 16"):
        load_key(tmp_path / "k" / "api_key")


def test_a_non_loopback_host_needs_a_chosen_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RLTRAIN_API_KEY", raising=False)
    assert cmd_serve(["--host", "0.0.0.0", "--port", "0"]) == 2
    assert "not a loopback address: set RLTRAIN_API_KEY" in capsys.readouterr().err
