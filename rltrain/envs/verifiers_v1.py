"""verifiers 0.4 environments (the v1 stack: tasksets, harnesses, traces), loaded from an `[[env]]`
entry and run unchanged; rollout/v1_runner.py drives their episodes against rltrain's engine.

The entry is the shape the Prime template writes (`name`, `taskset = {id, ...}`, `harness = {...}`) or
verifiers 0.4's own (`agent = {harness, runtime, ...}`). What 0.4 renamed or moved is translated with a
one-line notice: an env-level `harness` moves under `agent`, the `default` harness is now `bash`. Two
defaults are changed for a local run: the runtime is `{type = "subprocess"}` (verifiers defaults to a
remote sandbox), and the harness is `null` (chat and MCP tools; verifiers defaults to `bash`). The
`bash` harness gives the model a shell on this machine, so it runs only with `allow_bash = true`.

Never imports torch; verifiers is imported only when such an entry is used.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

from rltrain.envs.base import Row

log = logging.getLogger("rltrain")


def translate(entry: dict[str, Any], allow_bash: bool) -> tuple[dict[str, Any], list[str]]:
    """A verifiers 0.4 env config from an [[env]] entry's verifiers keys, and the notices it needs."""
    raw = copy.deepcopy(entry)
    notices: list[str] = []
    agent = raw.setdefault("agent", {})
    if "harness" in raw:
        agent["harness"] = raw.pop("harness")
        notices.append(
            "[[env]] harness: verifiers 0.4 keeps the harness under the agent; read as agent.harness"
        )
    harness = agent.setdefault("harness", {"id": "null"})
    if "runtime" in harness:  # the Prime template writes harness = {id, runtime}; 0.4 keeps it on the agent
        agent.setdefault("runtime", harness.pop("runtime"))
        notices.append(
            "[[env]] harness.runtime: verifiers 0.4 keeps the runtime under the agent; read as agent.runtime"
        )
    if harness.get("id") == "default":
        harness["id"] = "bash"
        notices.append("[[env]] harness id 'default' was renamed 'bash' in verifiers 0.4; read as 'bash'")
    if "id" not in harness:
        harness["id"] = "null"  # unpinned, verifiers would pick bash: a shell on this machine
    if harness["id"] == "bash" and not allow_bash:
        raise ValueError(
            "[[env]] harness 'bash' runs the model's shell commands on this machine; "
            "set allow_bash = true on the entry to allow it"
        )
    if harness["id"] == "bash":
        log.warning(
            "environment: the bash harness gives the model a shell on this machine (allow_bash = true)"
        )
    if "runtime" not in agent:
        agent["runtime"] = {"type": "subprocess"}  # verifiers' default is a remote sandbox
    return raw, notices


def prepare_offline_harness(interpreter: str | None = None) -> str:
    """Run verifiers' bundled chat program (the null and bash harnesses) on this interpreter (or on
    `interpreter`, a stand-in for it); returns the program's path.

    verifiers prepares it with `uv sync --script`, which needs uv and PyPI in every new process (it
    forces UV_OFFLINE off). Every package the program needs is a verifiers dependency, already here.
    Uses verifiers 0.4.0's private interpreter memo: pinned, and covered by tests/envs/test_verifiers_v1.py.
    """
    from verifiers.v1.harnesses.utils.launch import CHAT_PROGRAM_SOURCE
    from verifiers.v1.runtimes.subprocess import SubprocessRuntime

    data = CHAT_PROGRAM_SOURCE.encode()
    path = Path(SubprocessRuntime.scripts_dir) / f"{hashlib.sha256(data).hexdigest()}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_bytes() != data:
        path.write_bytes(data)
    SubprocessRuntime._interpreters[str(path)] = interpreter or sys.executable
    return str(path)


class V1Env:
    """A verifiers environment as a slot: its tasks are the rows the prompt order draws."""

    multi_turn = True
    tools: dict[str, Any] = {}
    env_response = None

    def __init__(self, vf_env: Any, renderer: str | dict[str, Any] | None, max_turns: int) -> None:
        self.vf_env = vf_env
        self.renderer = renderer
        self.max_turns = max_turns
        self.tasks = list(vf_env.taskset)
        if not self.tasks:
            raise ValueError(f"verifiers taskset {vf_env.config.taskset.id!r} has no tasks")
        self.rows = [self._row(i, t) for i, t in enumerate(self.tasks)]
        self.eval_rows: list[Row] | None = None

    @staticmethod
    def _row(index: int, task: Any) -> Row:
        prompt = task.data.prompt
        if isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        elif prompt:
            messages = [m if isinstance(m, dict) else m.model_dump(exclude_none=True) for m in prompt]
        else:
            messages = [
                {"role": "user", "content": f"(task {index}: its environment opens the conversation)"}
            ]
        return Row(prompt=messages, answer=None, info={"v1_task": index})

    def __len__(self) -> int:
        return len(self.rows)


def load_v1(entry: dict[str, Any], renderer: str | dict[str, Any] | None, allow_bash: bool) -> V1Env:
    """Load the verifiers environment an [[env]] entry describes."""
    try:
        import verifiers.v1 as vf
    except ImportError as err:
        raise ValueError(
            f"[[env]] taskset needs verifiers 0.4 (pip install 'verifiers==0.4.0'): {err}"
        ) from None
    raw, notices = translate(entry, allow_bash)
    for notice in notices:
        log.info("notice: %s", notice)
    config = vf.resolve_env_config(raw)
    max_turns = int(getattr(config.agent, "max_turns", None) or 10) if hasattr(config, "agent") else 10
    return V1Env(vf.load_environment(config), renderer, max_turns)
