"""Environment code where it can be killed: reward functions, `env_response` and tools run in worker
processes, never in the trainer's.

A thread that runs a hung reward function can never be stopped, and Python joins it at exit, so the
run's process would outlive its last step. A worker process can be killed. Each worker is a fresh
interpreter (spawned, not forked: no copy of the trainer's state or threads) that loads the run's
environments itself from their id and args, so only plain data crosses the pipe: rows, completion
texts, messages and state dicts, never functions or environment objects.

A call that times out, kills its interpreter (os._exit, a segfault) or runs out of the worker's memory
limit raises `CallFailed`; the worker is killed and a fresh one replaces it on the next call.

Nothing a worker starts outlives the run (envs/spawn.py): each worker leads its own process group,
killed whole; it asks the kernel for SIGKILL when the trainer ends (PR_SET_PDEATHSIG, set before any
environment code runs, so no Python thread has to win the GIL from code stuck in a regex); and the
run's reaper kills every group still alive when the trainer is killed.
"""

from __future__ import annotations

import os
import pickle
import resource
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from rltrain.envs.spawn import kill_group, spawn

BOOT = "import sys; from rltrain.envs.workers import serve; serve(int(sys.argv[1]), int(sys.argv[2]))"
# Another interpreter (an [[env]] with its own venv) runs this file by path: see its docstring
FOREIGN_WORKER = Path(__file__).with_name("foreign_worker.py")
PARENT_VAR = "RLTRAIN_WORKER_PARENT"  # the trainer's pid, as the worker checks it after PR_SET_PDEATHSIG
PR_SET_PDEATHSIG = 1  # linux/prctl.h
Loader = Callable[[str, dict[str, Any]], Any]  # (env id, args) -> an object with the Environment methods


@dataclass(frozen=True)
class EnvSpec:
    """How a worker loads one of the run's environments: what `[[env]]` says."""

    name: str
    id: str
    args: dict[str, Any]


class CallFailed(Exception):
    """A call into environment code failed; `kind` is timeout, crash, memory, non-finite or the
    exception's type name."""

    def __init__(self, kind: str, detail: str, trace: str = "") -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail
        self.trace = trace  # the worker's traceback of the exception, when it raised one


def _dispatch(
    envs: dict[str, Any], specs: dict[str, EnvSpec], request: tuple[str, str, tuple], load: Loader | None
) -> Any:
    env_name, method, args = request
    if env_name not in envs:
        from rltrain.envs.loader import load_rltrain_environment

        spec = specs[env_name]
        envs[env_name] = (load or load_rltrain_environment)(spec.id, spec.args)
    return getattr(envs[env_name], method)(*args)


def _die_with_parent() -> None:
    """A worker must not outlive the trainer, even one stuck in a hung call when the trainer is killed:
    the kernel kills it (Linux); elsewhere a thread watches the parent pid."""
    parent = int(os.environ.get(PARENT_VAR) or os.getppid())
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent:  # the trainer died before the request took effect
                os._exit(1)
            return
    _exit_with_parent(parent)


def _exit_with_parent(parent: int) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def serve(read_fd: int, write_fd: int, load: Loader | None = None) -> None:
    """The worker's loop: (env name, Environment method, args) in, ("ok", value) or
    ("error", kind, first line, traceback) out. `load` builds an environment (default: an rltrain
    environment; the foreign worker passes its own)."""
    _die_with_parent()  # first: before anything that could hang
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle; it ends us
    for fd in (read_fd, write_fd):  # a child of environment code must not hold the trainer's pipes
        os.set_inheritable(fd, False)
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    specs, limit_bytes = inbox.recv()
    if limit_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    envs: dict[str, Any] = {}
    outbox.send(("ready", os.getpid()))
    while True:
        try:
            request = inbox.recv()
        except EOFError:  # the trainer is gone
            os._exit(0)
        try:
            reply: tuple[Any, ...] = ("ok", _dispatch(envs, specs, request, load))
        except MemoryError:
            reply = ("error", "memory", "MemoryError: over the worker's memory limit")
        except Exception as err:  # researchers' code: any exception goes back as data
            from rltrain.envs.base import NonFiniteReward

            kind = "non-finite" if isinstance(err, NonFiniteReward) else type(err).__name__
            first = str(err).splitlines()[0][:300] if str(err) else kind
            reply = ("error", kind, first, traceback.format_exc())
        try:
            outbox.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError) as err:
            outbox.send(("error", "unpicklable", f"the result cannot be sent back: {err}"))


class Worker:
    """One worker process and its two pipes."""

    def __init__(self, specs: dict[str, EnvSpec], memory_limit_mb: int, python: str | None = None) -> None:
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        if python is None:
            command = [sys.executable, "-c", BOOT]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        else:  # its own venv: none of the trainer's packages ([[env]] path entries are in PYTHONPATH)
            command, env = [python, str(FOREIGN_WORKER)], dict(os.environ)
        env[PARENT_VAR] = str(os.getpid())
        try:
            self.proc = spawn([*command, str(to_child), str(from_child)], (to_child, from_child), env)
        except BaseException:
            for fd in (to_child, from_child, to_parent, from_parent):
                os.close(fd)
            raise
        os.close(to_child)
        os.close(from_child)
        self.outbox = Connection(from_parent, readable=False)
        self.inbox = Connection(to_parent, writable=False)
        self.outbox.send((specs, memory_limit_mb * 2**20))
        self.ready = False

    def call(self, request: tuple[str, str, tuple], timeout_s: float) -> Any:
        if not self.ready:  # the interpreter's start-up is not the call's time
            self._expect(120.0, "start")
            self.ready = True
        try:
            self.outbox.send(request)
        except (BrokenPipeError, OSError):
            raise CallFailed("crash", f"worker exited with {self.proc.poll()}") from None
        reply = self._expect(timeout_s, "call")
        if reply[0] == "error":
            raise CallFailed(reply[1], reply[2], reply[3] if len(reply) > 3 else "")
        return reply[1]

    def _expect(self, timeout_s: float, what: str) -> tuple[Any, ...]:
        try:
            if not self.inbox.poll(timeout_s):
                raise CallFailed("timeout", f"no result within {timeout_s:g}s")
            reply: tuple[Any, ...] = self.inbox.recv()
        except (EOFError, ConnectionResetError, OSError):
            kill_group(self.proc)  # what it started goes with it
            code = self.proc.wait()
            how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
            raise CallFailed("crash", f"worker {how} during {what}") from None
        return reply

    def kill(self) -> None:
        kill_group(self.proc)
        self.proc.wait()
        self.inbox.close()
        self.outbox.close()


class WorkerPool:
    """Up to `size` workers, started on demand; `call` is blocking and thread-safe. `python`: the
    interpreter of an environment's own venv (default: the trainer's)."""

    def __init__(
        self, specs: list[EnvSpec], size: int, memory_limit_mb: int = 0, python: str | None = None
    ) -> None:
        self.specs = {s.name: s for s in specs}
        self.size, self.memory_limit_mb, self.python = size, memory_limit_mb, python
        self.failures: Counter[str] = Counter()  # replaced workers, by why
        self._idle: list[Worker] = []
        self._all: set[Worker] = set()
        self._started = 0
        self._cond = threading.Condition()
        self._closed = False

    def _borrow(self) -> Worker:
        with self._cond:
            while not self._idle and self._started >= self.size:
                self._cond.wait()
            if self._closed:
                raise CallFailed("closed", "the worker pool is closed")
            if self._idle:
                return self._idle.pop()
            self._started += 1
        worker = Worker(self.specs, self.memory_limit_mb, self.python)
        with self._cond:
            self._all.add(worker)
        return worker

    def _give_back(self, worker: Worker, alive: bool) -> None:
        with self._cond:
            if alive and not self._closed:
                self._idle.append(worker)
            else:
                self._started -= 1
                self._all.discard(worker)
            self._cond.notify()
        if not alive or self._closed:
            worker.kill()

    def call(self, env_name: str, method: str, *args: Any, timeout_s: float) -> Any:
        """`Environment.method(*args)` of `env_name` in a worker; raises CallFailed."""
        worker = self._borrow()
        try:
            result = worker.call((env_name, method, args), timeout_s)
        except CallFailed as err:
            lost = err.kind in ("timeout", "crash", "memory")  # its state is suspect: replace it
            if lost:
                self.failures[err.kind] += 1
            self._give_back(worker, alive=not lost)
            raise
        except BaseException:
            self._give_back(worker, alive=False)
            raise
        self._give_back(worker, alive=True)
        return result

    def close(self) -> None:
        """Kill every worker, busy ones too: a hung call must not keep anything alive."""
        with self._cond:
            self._closed = True
            workers, self._idle = list(self._all), []
            self._all.clear()
            self._cond.notify_all()
        for worker in workers:
            worker.kill()
