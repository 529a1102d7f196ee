"""A warm Python for harness programs: each run is a fork of a process that has already imported
what the program imports, instead of a fresh interpreter that imports it all again.

verifiers' null harness runs its chat program once per turn of every episode (`python <script>
<args>`), and most of that program's life is the interpreter's start and its imports (openai, httpx,
mcp: ~1 s of CPU each time; bench_v1_taskset). Here a server process ("zygote") imports a script's
modules and compiles it once; the "interpreter" verifiers is given is a small launcher that hands the
zygote its argv, working directory, environment and stdio, and waits. The zygote forks; the child
becomes the program (new session, the launcher's stdio, `__name__ == "__main__"`) and reports its exit
status, and tells the zygote which modules it imported on the way, so the next forks have them too.
What verifiers sees is unchanged: a process with the program's output and exit code, whose
process group it may kill: the child watches its launcher and ends its own session with it. Signals
the launcher receives (TERM, INT, HUP) are passed on. When the zygote is unreachable the launcher
execs the real interpreter, as before.

Never imports rltrain or torch: `serve` runs as a script, so the forked programs carry nothing else.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
import types
from pathlib import Path
from typing import Any

SOCKET = "zygote.sock"  # in the warm Python's folder
LAUNCHER = """#!{python} -IS
import json, os, signal, socket, struct, sys
SOCKET, PYTHON = {socket!r}, {python!r}
def recv(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(SOCKET)
    body = json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}).encode()
    socket.send_fds(s, [struct.pack("!Q", len(body)) + body], [0, 1, 2])
    pid = recv(s, 4)
except OSError:
    pid = None
if pid is None:  # no zygote: the plain interpreter, as verifiers would have run it
    os.execv(PYTHON, [PYTHON, *sys.argv[1:]])
pid = struct.unpack("!i", pid)[0]
sent = []
def forward(n, frame):
    sent.append(n)
    os.kill(pid, n)
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, forward)
code = recv(s, 4)
if code is None and sent:  # the program died of the signal passed on: so does its stand-in
    signal.signal(sent[-1], signal.SIG_DFL)
    os.kill(os.getpid(), sent[-1])
sys.exit(struct.unpack("!i", code)[0] if code else 1)
"""


def _imports(tree: ast.AST) -> list[str]:
    """Every module a script imports, at any depth, except under `if TYPE_CHECKING:`."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for branch in node.orelse:
                visit(branch)
            return
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def _prepare(path: str, codes: dict[str, Any]) -> Any:
    """The script compiled, its imports loaded into this (the zygote's) process."""
    if path not in codes:
        import importlib

        source = Path(path).read_bytes()
        tree = ast.parse(source, path)
        for name in _imports(tree):
            with contextlib.suppress(Exception):  # what fails to import here fails in the program too
                importlib.import_module(name)
        codes[path] = compile(tree, path, "exec")
    return codes[path]


def _recv_exact(conn: socket.socket, n: int, first: bytes = b"") -> bytes:
    data = first
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError("the launcher hung up")
        data += chunk
    return data


def _request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 65536, 3)
    head = _recv_exact(conn, 8, data[:8]) if len(data) < 8 else data[:8]
    size = struct.unpack("!Q", head)[0]
    body = _recv_exact(conn, size, data[8:])
    return json.loads(body), list(fds)


def _as_original(env: dict[str, str], launcher_home: str) -> dict[str, str]:
    """verifiers derives VIRTUAL_ENV and PATH from the interpreter's location: the launcher's here. The
    program gets what the real interpreter's location would have given."""
    real = str(Path(sys.executable).parent.parent)
    if env.get("VIRTUAL_ENV") == launcher_home:
        env["VIRTUAL_ENV"] = real
        parts = env.get("PATH", "").split(os.pathsep)
        env["PATH"] = os.pathsep.join(f"{real}/bin" if p == f"{launcher_home}/bin" else p for p in parts)
    return env


def _child(conn: socket.socket, fds: list[int], request: dict[str, Any], code: Any, home: str) -> None:
    """In the forked child: become the program, report its exit status, never return."""
    status, before = 1, set(sys.modules)
    try:
        os.setsid()  # its own session: ending it ends whatever the program started
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(_as_original(dict(request["env"]), home))
        conn.sendall(struct.pack("!i", os.getpid()))

        def watch() -> None:  # the launcher gone (killed with its group): the program goes too
            with contextlib.suppress(OSError):
                conn.recv(1)
            os.killpg(0, signal.SIGKILL)

        threading.Thread(target=watch, daemon=True, name="launcher-watch").start()
        argv = list(request["argv"])
        sys.argv = argv
        sys.path.insert(0, str(Path(argv[0]).resolve().parent))  # as `python script.py` has it
        main = types.ModuleType("__main__")
        main.__file__ = argv[0]
        sys.modules["__main__"] = main
        try:
            exec(code, main.__dict__)
            status = 0
        except SystemExit as err:
            if err.code is None or isinstance(err.code, int):
                status = int(err.code or 0)
            else:
                print(err.code, file=sys.stderr)
                status = 1
        except BaseException:
            traceback.print_exc()
            status = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        with contextlib.suppress(OSError):
            conn.sendall(struct.pack("!i", status))
        _teach(home, sorted(set(sys.modules) - before - {"__main__"}))
        os._exit(status)


def _teach(home: str, modules: list[str]) -> None:
    """Tell the zygote what the program imported on the way (openai loads its API types lazily, on
    first use): the next programs are forked with those loaded too."""
    if not modules:
        return
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(os.path.join(home, SOCKET))
        body = json.dumps({"learn": modules}).encode()
        s.sendall(struct.pack("!Q", len(body)) + body)


def _learn(modules: list[str]) -> None:
    """Import what a program imported. A module that starts a thread makes forking unsafe: then the
    zygote ends, and launchers run programs on plain interpreters."""
    import importlib

    for name in modules:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    if threading.active_count() > 1:
        os._exit(0)


def serve(sock_path: str, home: str, scripts: list[str]) -> None:
    """The zygote: warm each script, then fork one child per launcher that connects."""
    import select

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the children
    codes: dict[str, Any] = {}
    for path in scripts:
        _prepare(path, codes)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(128)
    parent = os.getppid()
    print("ready", flush=True)
    while os.getppid() == parent:  # the run is gone: so is the zygote
        if not select.select([server], [], [], 0.5)[0]:
            continue
        conn, _ = server.accept()
        fds: list[int] = []
        try:
            request, fds = _request(conn)
            if "learn" in request:  # from a child that has run its program
                conn.close()
                _learn(list(request["learn"]))
                continue
            code = _prepare(str(request["argv"][0]), codes)
        except Exception:  # a broken request: the launcher sees the hang-up and runs the program itself
            conn.close()
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:
            server.close()
            _child(conn, fds, request, code, home)
        conn.close()
        for fd in fds:
            os.close(fd)


class WarmPython:
    """A zygote for `scripts` and the launcher that stands in for the interpreter (`.interpreter`)."""

    def __init__(self, scripts: list[str]) -> None:
        self.home = tempfile.mkdtemp(prefix="rltrain-warm-")
        sock = os.path.join(self.home, SOCKET)
        bin_dir = Path(self.home) / "bin"
        bin_dir.mkdir()
        self.interpreter = str(bin_dir / "python")
        Path(self.interpreter).write_text(LAUNCHER.format(python=sys.executable, socket=sock))
        os.chmod(self.interpreter, 0o755)
        self.proc = subprocess.Popen(
            # -P: not this file's folder on sys.path (the programs get their own script's folder)
            [sys.executable, "-P", __file__, sock, self.home, *scripts],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C is the trainer's; the zygote ends with it (or in close)
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()  # after the scripts' imports: the first episode is warm too
        if ready.strip() != b"ready":
            self.close()
            raise RuntimeError("the warm Python for harness programs did not start")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        shutil.rmtree(self.home, ignore_errors=True)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], sys.argv[3:])
