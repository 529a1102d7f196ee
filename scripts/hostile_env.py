"""A hostile multi-turn environment for scripts/fault_injection.py --multi-turn (a template: the
injector writes a copy with PIDS_DIR filled in, and runs it as an environment by path).

Each answer to an assistant turn is chosen by a hash of the conversation so far, so a resumed run
meets the same faults at the same turns: it hangs past the turn timeout, floods a megabyte of text,
raises, starts a `sleep` child that outlives the turn, answers with malformed and deeply nested
tool-call markup, answers with content no chat template renders (a dict), or answers plainly. Every
worker and child records its pid in PIDS_DIR, where the injector checks that none outlives its run.
"""

import os
import pathlib
import subprocess
import time
import zlib

import rltrain

PIDS = pathlib.Path("PIDS_DIR")
NESTED = "<tool_call>" + '{"name": "add", "arguments": ' * 1000 + "[" * 3000


def _kind(messages: list[dict], state: dict) -> int:
    text = "\x1e".join(str(m.get("content")) for m in messages) + f"|{state.get('turn')}"
    return zlib.crc32(text.encode()) % 8


def respond(messages: list[dict], state: dict) -> list[dict] | None:
    (PIDS / f"worker-{os.getpid()}").touch()
    kind = _kind(messages, state)
    if kind == 0:  # hangs: the turn times out and the worker is killed
        time.sleep(3600)
    if kind == 1:  # floods: capped at scoring.max_env_chars, the context checked before appending
        return [{"role": "user", "content": "word " * 200_000}]
    if kind == 2:
        raise RuntimeError("the tool broke")
    if kind == 3:  # a child that outlives the turn: it goes with its worker's process group
        child = subprocess.Popen(["sleep", "900"])
        (PIDS / f"child-{child.pid}").touch()
        return [{"role": "user", "content": "forked"}]
    if kind == 4:
        return [{"role": "user", "content": NESTED}]
    if kind == 5:
        return [{"role": "user", "content": {"not": "a string"}}]
    return [{"role": "user", "content": "again"}]


def digits(completion: list[dict]) -> float:
    text = "".join(str(m.get("content")) for m in completion if m.get("role") == "assistant")
    return sum(c.isdigit() for c in text) / max(len(text), 1)


def load_environment() -> rltrain.Environment:
    rows = [{"question": f"Count from {i}:"} for i in range(16)]
    return rltrain.Environment(rows, [digits], env_response=respond, max_turns=3)
