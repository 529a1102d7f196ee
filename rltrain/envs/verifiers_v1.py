"""verifiers 0.4 environments (the v1 stack: tasksets, harnesses, traces), loaded from an `[[env]]`
entry and run unchanged; kinds/verifiers.py drives their episodes against rltrain's engine.

The entry is the shape the Prime template writes (`name`, `taskset = {id, ...}`, `harness = {...}`) or
verifiers 0.4's own (`agent = {harness, runtime, ...}`). What 0.4 renamed or moved is translated with a
one-line notice: an env-level `harness` moves under `agent`, the `default` harness is now `bash`. Two
defaults are changed for a local run: the runtime is `{type = "subprocess"}` (verifiers defaults to a
remote sandbox), and the harness is `null` (chat and MCP tools; verifiers defaults to `bash`).

Harnesses are an allowlist. Of verifiers 0.4's, only `null` never executes what the model writes (its
EXECUTES_CODE is False: a chat loop, the environment's own MCP tools). Every other one runs the model's
commands or code: bash (a shell), mini-swe-agent (`--yolo`), terminus-2 (tmux), codex, claude-code,
kimi-code, openclaw, pi, prime-agent, hermes-agent, rlm (IPython, bash), browser-use (Python driving a
browser), and whatever harness a taskset brings. On a local runtime (`subprocess`: this machine) those
run only with `allow_bash = true`, whichever role they play and however they were chosen (the entry, the
env config's declared default, the taskset's own); in a container or sandbox runtime they run.

Never imports torch; verifiers is imported only when such an entry is used.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from rltrain.envs.base import Row
from rltrain.envs.loader import raised

log = logging.getLogger("rltrain")


def translate(
    entry: dict[str, Any], allow_bash: bool, roles: Sequence[str] = ("agent",), pinned: Collection[str] = ()
) -> tuple[dict[str, Any], list[str]]:
    """A verifiers 0.4 env config from an [[env]] entry's verifiers keys, and the notices it needs.

    `roles`: the environment's agent roles, as its env config declares them (`agent` for a single-agent
    env; `player` for openenv and textarena; `solver`/`judge`, `assistant`/`user` for multi-agent envs);
    `pinned`: the roles whose declared default already names a harness. Local defaults go under each."""
    raw = copy.deepcopy(entry)
    notices: list[str] = []
    roles = list(roles) or ["agent"]
    for key in ("agent", "harness"):  # what rltrain's entry spells for a single-agent env
        if key not in raw or key in roles:
            continue
        if len(roles) > 1:
            raise ValueError(
                f"[[env]] {key}: this environment's roles are {', '.join(roles)}; set each under "
                f"verifiers = {{{roles[0]} = {{...}}, ...}}"
            )
        if key == "agent":
            raw[roles[0]] = raw.pop("agent")
            if roles[0] != "agent":
                notices.append(f"[[env]] agent: this environment's role is {roles[0]!r}; read as {roles[0]}")
        else:
            raw.setdefault(roles[0], {})["harness"] = raw.pop("harness")
            where = f"{roles[0]}.harness"
            notices.append(
                f"[[env]] harness: verifiers 0.4 keeps the harness under the agent; read as {where}"
            )
    for role in roles:
        notices += _agent_defaults(raw.setdefault(role, {}), role, role in pinned)
        harness = raw[role].get("harness") or {}
        if harness.get("id") not in (None, *SAFE_HARNESSES) and _local(raw[role]):
            if not allow_bash:
                raise ValueError(_refusal(harness["id"], role))  # before loading anything: the entry says so
            notices.append(
                f"allow_bash: harness {harness['id']!r} ({role}) may run the model's commands on this machine"
            )
    return raw, notices


def _agent_defaults(agent: dict[str, Any], role: str, pinned: bool) -> list[str]:
    """A role's harness (null unless given or declared) and runtime (subprocess unless given)."""
    notices = []
    if "harness" in agent or not pinned:
        harness = agent.setdefault("harness", {"id": "null"})
        if "runtime" in harness:  # the Prime template writes harness = {id, runtime}; 0.4: on the agent
            agent.setdefault("runtime", harness.pop("runtime"))
            where = f"{role}.runtime"
            notices.append(
                f"[[env]] harness.runtime: verifiers 0.4 keeps the runtime under the agent; read as {where}"
            )
        if harness.get("id") == "default":
            harness["id"] = "bash"
            notices.append("[[env]] harness id 'default' was renamed 'bash' in verifiers 0.4; read as 'bash'")
        if "id" not in harness:
            harness["id"] = "null"  # unpinned, verifiers would pick bash: a shell on this machine
    if "runtime" not in agent:
        agent["runtime"] = {"type": "subprocess"}  # verifiers' default is a remote sandbox
    return notices


SAFE_HARNESSES = ("null",)  # never execute model output: run without allow_bash


def _local(agent: Any) -> bool:
    """Whether a role's runtime is this machine (verifiers' subprocess runtime)."""
    runtime = agent.get("runtime") if isinstance(agent, dict) else getattr(agent, "runtime", None)
    kind = runtime.get("type") if isinstance(runtime, dict) else getattr(runtime, "type", None)
    return kind in (None, "subprocess")


def _refusal(harness: str, role: str) -> str:
    return (
        f"[[env]] harness {harness!r} ({role}) runs the model's commands on this machine (subprocess "
        "runtime); set allow_bash = true on the entry to allow it, or run it in a docker or prime runtime"
    )


def check_harnesses(vf_env: Any, allow_bash: bool) -> None:
    """Refuse a loaded environment whose roles run, on this machine, a harness that executes model
    output, unless `allow_bash`: what each role really got (its pin, the env config's declared default,
    or the taskset's own harness). verifiers 0.4.0 keeps them in the env's private `_harnesses` and
    `_agent_specs` (pinned; tests/envs/test_verifiers_v1.py)."""
    from verifiers.v1.harnesses import NullHarness

    for role, harness in vf_env._harnesses.items():
        if type(harness) is NullHarness or not _local(vf_env._agent_specs[role]):
            continue
        if not allow_bash:
            raise ValueError(_refusal(str(harness.config.id), role))
        log.warning(
            "environment: harness %r (%s) runs the model's commands on this machine (allow_bash = true)",
            harness.config.id,
            role,
        )


_KEYS: dict[str, str] = {}  # api_key_var -> key, for verifiers' clients in this process


def hand_key(var: str, key: str | None) -> None:
    """Give verifiers' clients the key their config names by `var`, without putting it in os.environ,
    where every process started later would read it (environment workers, tool servers, code a model
    wrote). verifiers 0.4.0 reads a client's key in one place, `resolve_api_key`, which clients/base.py
    builds every client with: that lookup is wrapped to see these keys first. `key` None: forget it.
    Pinned, covered by tests/envs/test_verifiers_v1.py."""
    import verifiers.v1.clients.base as base

    if base.resolve_api_key is not _resolve_key:
        _original.append(base.resolve_api_key)
        base.resolve_api_key = _resolve_key
    if key is None:
        _KEYS.pop(var, None)
    else:
        _KEYS[var] = key


_original: list[Any] = []  # verifiers' own resolve_api_key, once wrapped


def _resolve_key(config: Any) -> str:
    return _KEYS.get(config.api_key_var) or str(_original[0](config))


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
    """A loaded verifiers environment and its tasks as rows (kinds/verifiers.py runs it)."""

    capacity: int | None = None  # sessions its server holds at once, where it has one (openenv)

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


def roles_of(entry: dict[str, Any]) -> tuple[list[str], set[str]]:
    """The agent roles the entry's env config declares, and those whose default pins a harness."""
    from verifiers.v1.configs.agent import AgentConfig
    from verifiers.v1.utils.loaders import env_config_type

    taskset = entry.get("taskset") or {}
    cls = env_config_type(str(taskset.get("id") or ""), str(entry.get("id") or ""))
    defaults = {n: f.default for n, f in cls.model_fields.items() if isinstance(f.default, AgentConfig)}
    return list(defaults) or ["agent"], {n for n, d in defaults.items() if d.harness is not None}


def load_v1(entry: dict[str, Any], renderer: str | dict[str, Any] | None, allow_bash: bool) -> V1Env:
    """Load the verifiers environment an [[env]] entry describes; one line for whatever it raises."""
    try:
        import verifiers.v1 as vf
    except ImportError as err:
        raise ValueError(
            f"[[env]] taskset needs verifiers 0.4 (pip install 'verifiers==0.4.0'): {err}"
        ) from None
    label = str(entry.get("id") or (entry.get("taskset") or {}).get("id"))
    try:
        roles, pinned = roles_of(entry)
    except Exception as err:  # the taskset's or env's own import
        raise raised(label, "import", err) from err
    raw, notices = translate(entry, allow_bash, roles, pinned)
    for notice in notices:
        log.info("notice: %s", notice)
    try:
        config = vf.resolve_env_config(raw)
        vf_env = vf.load_environment(config)
    except Exception as err:
        raise raised(label, "load_environment", err) from err
    check_harnesses(vf_env, allow_bash)
    try:
        env = V1Env(vf_env, renderer, _max_turns(config, roles))
    except Exception as err:
        raise raised(label, "load_environment", err) from err
    env.capacity = _openenv_capacity(label, raw.get("taskset") or {})
    return env


def _max_turns(config: Any, roles: Sequence[str]) -> int:
    return max(int(getattr(getattr(config, r, None), "max_turns", None) or 10) for r in roles)


def _openenv_capacity(label: str, taskset: dict[str, Any]) -> int | None:
    """How many sessions verifiers' openenv taskset may hold on its server at once: more are refused,
    and its client then reports only a closed connection."""
    if taskset.get("id") != "openenv" or not taskset.get("base_url"):
        return None
    from rltrain.envs.openenv_client import OpenEnvError, probe_capacity

    try:
        capacity = probe_capacity(str(taskset["base_url"]))
    except OpenEnvError as err:
        log.warning("environment %s: cannot learn its OpenEnv server's capacity: %s", label, err)
        return None
    log.info("notice: environment %s: its OpenEnv server holds %d sessions at once", label, capacity)
    return capacity
