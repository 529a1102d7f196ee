"""The seams the brief asks for, checked on the source: no import cycle, the rollout side never imports
the trainer, environments never import torch, and no function takes a long positional list."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rltrain"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """rltrain module -> rltrain modules it imports (top-level or inside functions)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rltrain"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                found |= {t for t in targets if t in modules}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in modules}
        graph[name] = found - {name, "rltrain"}
    return graph


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


def test_seams() -> None:
    graph = _graph()
    rollout = {m: deps for m, deps in graph.items() if m.startswith("rltrain.rollout")}
    assert not {m: d for m, d in rollout.items() if any(x.startswith("rltrain.trainer") for x in d)}
    trainer = {m: deps for m, deps in graph.items() if m.startswith("rltrain.trainer")}
    assert not {m: d for m, d in trainer.items() if any(x.startswith("rltrain.rollout") for x in d)}
    for path in (PACKAGE / "envs").glob("*.py"):
        assert "import torch" not in path.read_text(), f"{path.name}: environments never import torch"
    only_vllm = [p.name for p in PACKAGE.rglob("*.py") if "import vllm" in p.read_text()]
    assert only_vllm == ["vllm_backend.py"]


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
