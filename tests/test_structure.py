"""The seams the brief asks for, checked on the source's AST: no import cycle, no import running up the
layers (docs/architecture.md), the rollout side never imports the trainer nor the trainer vLLM,
environments never import torch, no function takes a long positional list; and the commands that
only read and write the runs directory never load torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import tomli_w

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "rltrain"

# Lowest first: a module imports from its own layer and the ones below, never from one above.
# A new module must be placed here (test_every_module_has_a_layer).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "rltrain.types",
            "rltrain.config",
            "rltrain.config_sections",
            "rltrain.config_openenv",
            "rltrain.prime_rl",
            "rltrain.starter",
            "rltrain.models",
            "rltrain.tiny",
            "rltrain.smollm2",
            "rltrain.families",
            "rltrain.fsutil",
            "rltrain.record",
            "rltrain.recorder",
            "rltrain.plots",
            "rltrain.progress",
            "rltrain.signals",
            "rltrain.distributed",
            "rltrain.rundir",
            "rltrain.guards",  # [[guards]] is a config section; its state machine reads metrics rows
            "rltrain.evalstats",
            "rltrain.wandb_log",  # [wandb]: a logger the recorder feeds
        ),
    ),  # fmt: skip
    ("environments and loss math", ("rltrain.envs", "rltrain.algo")),
    (
        "engines: sampling and training",
        ("rltrain.rollout", "rltrain.trainer", "rltrain.adapters", "rltrain.checkpoint"),
    ),
    ("environment kinds", ("rltrain.kinds",)),
    ("orchestrator", ("rltrain.orchestrator",)),
    (
        "entry points",
        (
            "rltrain",
            "rltrain.run",
            "rltrain.eval_cli",
            "rltrain.queue",
            "rltrain.runs_cli",
            "rltrain.serve",
            "rltrain.__main__",
        ),
    ),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, top-level or inside functions (`from x import y`: x and x.y)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def _imports_any(path: Path, package: str) -> bool:
    return any(m == package or m.startswith(f"{package}.") for m in _imports(path))


def _graph() -> dict[str, set[str]]:
    """rltrain module -> rltrain modules it imports."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: (_imports(path) & set(modules)) - {name, "rltrain"} for name, path in modules.items()}


def _layer(module: str) -> int:
    """The index of a module's layer, -1 if none: the longest matching package prefix wins (`rltrain`
    itself, the public `rltrain.Environment`, names only the package's __init__)."""
    best, level = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module.startswith(f"{prefix}.") and prefix != "rltrain"
            if (module == prefix or inside) and len(prefix) > best:
                best, level = len(prefix), i
    return level


def test_import_graph_has_no_cycle() -> None:
    graph, state, stack = _graph(), {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_every_module_has_a_layer() -> None:
    assert not [m for m in _graph() if _layer(m) < 0]


def test_no_import_runs_up_the_layers() -> None:
    up = [
        f"{m} ({LAYERS[_layer(m)][0]}) -> {d} ({LAYERS[_layer(d)][0]})"
        for m, deps in _graph().items()
        for d in deps
        if _layer(d) > _layer(m)
    ]
    assert not up, up


def test_seams() -> None:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    rollout = [
        m for m, p in files.items() if m.startswith("rltrain.rollout") and _imports_any(p, "rltrain.trainer")
    ]
    assert not rollout, rollout
    trainer = [
        m for m, p in files.items() if m.startswith("rltrain.trainer") and _imports_any(p, "rltrain.rollout")
    ]
    assert not trainer, trainer
    vllm = sorted(m for m, p in files.items() if _imports_any(p, "vllm"))
    assert vllm == ["rltrain.rollout.vllm_backend"], vllm  # the trainer (and everything else) never does
    light = [*(PACKAGE / "envs").glob("*.py"), *(REPO / "environments").glob("*.py")]
    heavy = [p.name for p in light if _imports_any(p, "torch")]
    assert not heavy, f"environments never import torch: {heavy}"


def test_the_seam_checks_see_every_import_form(tmp_path: Path) -> None:
    """`from torch import x`, `from torch.nn import y` and `import torch.nn` are all torch."""
    for line in (
        "import torch",
        "from torch import nn",
        "from torch.nn import functional",
        "import torch.nn",
    ):
        path = tmp_path / "probe.py"
        path.write_text(f"def f():\n    {line}\n")
        assert _imports_any(path, "torch"), line
    (tmp_path / "probe.py").write_text("import torchvision_like\n# import torch\n")
    assert not _imports_any(tmp_path / "probe.py", "torch")


def test_no_long_positional_parameter_lists() -> None:
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [
                    a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")
                ]
                if len(names) > 5:
                    long.append(f"{path.name}:{node.lineno} {node.name}({', '.join(names)})")
    assert not long, long


NO_TORCH = """
import sys
from rltrain.__main__ import main

runs, config = sys.argv[1], sys.argv[2]
assert main(["submit", "--config", config, "--runs", runs]) == 0
assert main(["runs", "--runs", runs]) == 0
assert main(["runs", "show", "q", "--runs", runs]) == 0
main(["runs", "--runs", runs, "plot", "q", "--out", runs + "/q.png"])  # no metrics yet: any answer
assert main(["runs", "cancel", "q", "--runs", runs]) == 0
assert main(["worker", "--runs", runs, "--once"]) == 0  # nothing queued: it never starts a run
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "transformers", "peft")))
assert not loaded, loaded
print("no torch")
"""


def test_the_runs_commands_never_load_torch(tmp_path: Path) -> None:
    cfg = {"model": "builtin:tiny", "max_steps": 1, "batch_size": 8, "rollouts_per_example": 8}
    config = tmp_path / "q.toml"
    config.write_text(tomli_w.dumps(cfg | {"env": [{"id": "digits"}], "run": {"id": "q"}}))
    proc = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(tmp_path / "runs"), str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and "no torch" in proc.stdout, proc.stderr
    assert json.loads((tmp_path / "runs" / "q" / "run.json").read_text())["status"] == "cancelled"
