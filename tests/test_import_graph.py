"""The static import graph of mhmoe/ and analysis/ has no circles, and only commands import commands.

Every import statement counts, function-level (lazy) ones included: a lazy import hides a circle
from the interpreter, not from a reader. An import of ``a.b.c`` is an edge to the most specific
module of the two packages that exists (``from a.b import c`` -> ``a.b.c`` if that is a module).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mhmoe", "analysis")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                targets = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                if (found := resolve(target)) and found != name:
                    graph[name].add(found)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()
    assert "mhmoe.training.runner" in graph["mhmoe.commands.train"]  # imported inside main()
    assert "mhmoe.sweep.plan" in graph["mhmoe.sweep"]  # the package's own re-export
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles() -> None:
    assert circles(import_graph()) == []


def test_only_the_cli_imports_commands() -> None:
    graph = import_graph()
    outside = {name: sorted(t for t in targets if t.startswith("mhmoe.commands"))
               for name, targets in graph.items()
               if not name.startswith("mhmoe.commands") and name != "mhmoe.cli"}
    assert {name: found for name, found in outside.items() if found} == {}


TRAINING_LAYER_AND_ABOVE = ("mhmoe.training", "mhmoe.sweep", "mhmoe.commands", "mhmoe.cli")
"""Training and what drives it; the model, sizing (budget, memory), data and tracking modules lie below."""


def test_no_lower_layer_imports_training() -> None:
    """An import runs downward only: the sizing layer's preflight estimates (mhmoe.memory) are imported
    by training (mhmoe.training.preflight), never the other way round."""
    upward = {name: sorted(t for t in targets if t.startswith("mhmoe.training"))
              for name, targets in import_graph().items() if not name.startswith(TRAINING_LAYER_AND_ABOVE)}
    assert {name: found for name, found in upward.items() if found} == {}
