"""The server's key and the browser's sessions.

One key guards every route: `Authorization: Bearer KEY` (what the prime CLI sends from PRIME_API_KEY),
compared in constant time. The key is RLTRAIN_API_KEY when set, else the content of a key file created
on first start with mode 0600 (a file others can read is refused). A browser enters the key once on the
login page and gets a session cookie (random, HttpOnly, SameSite=Strict), kept in memory: a restart of
the server asks for the key again.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import socket
import stat
import threading
import time
from pathlib import Path

ENV = "RLTRAIN_API_KEY"
MIN_LENGTH = 16
COOKIE = "rltrain_session"
SESSION_SECONDS = 12 * 3600


class KeySetupError(ValueError):
    """A key problem, as one line for the command line."""


def default_key_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "rltrain" / "api_key"


def load_key(key_file: Path) -> tuple[str, str]:
    """(key, where it came from): RLTRAIN_API_KEY, or the key file (created, mode 0600, if missing)."""
    given = os.environ.get(ENV)
    if given is not None:
        if len(given) < MIN_LENGTH:
            raise KeySetupError(f"{ENV} is shorter than {MIN_LENGTH} characters; choose a longer key")
        return given, ENV
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        try:  # O_EXCL: two servers starting at once never overwrite each other's key
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
    mode = stat.S_IMODE(key_file.stat().st_mode)
    if mode & 0o077:
        raise KeySetupError(
            f"key file {key_file} has mode {mode:04o}: others may read it; chmod 600 {key_file}"
        )
    key = key_file.read_text().strip()
    if len(key) < MIN_LENGTH:
        raise KeySetupError(f"key file {key_file} holds a key shorter than {MIN_LENGTH} characters")
    return key, str(key_file)


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback address (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0])).is_loopback for i in infos)


class Guard:
    """Checks a request's bearer key or session cookie; issues sessions on login."""

    def __init__(self, key: str) -> None:
        self._key = key.encode()
        self._sessions: dict[str, float] = {}  # token -> expiry (monotonic)
        self._lock = threading.Lock()

    def key_ok(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self._key)

    def bearer_ok(self, header: str | None) -> bool:
        scheme, _, value = (header or "").partition(" ")
        return scheme.lower() == "bearer" and self.key_ok(value.strip())

    def new_session(self) -> str:
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._sessions = {t: exp for t, exp in self._sessions.items() if exp > now}  # drop expired
            self._sessions[token] = now + SESSION_SECONDS
        return token

    def session_ok(self, cookie_header: str | None) -> bool:
        token = _cookie(cookie_header or "", COOKIE)
        if not token:
            return False
        with self._lock:
            expiry = self._sessions.get(token)
        return expiry is not None and expiry > time.monotonic()

    def end_session(self, cookie_header: str | None) -> None:
        with self._lock:
            self._sessions.pop(_cookie(cookie_header or "", COOKIE), None)


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return ""


def session_cookie(token: str) -> str:
    return f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECONDS}"
