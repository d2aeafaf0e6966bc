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


LAYERS = (
    ("mhmoe", "mhmoe.text_table"),
    ("mhmoe.config",),
    ("mhmoe.store",),
    ("mhmoe.model", "mhmoe.sizing", "mhmoe.data"),
    ("mhmoe.tracking",),
    ("mhmoe.training",),
    ("mhmoe.evaluation", "mhmoe.export"),
    ("analysis",),
    ("mhmoe.sweep",),
    ("mhmoe.commands", "mhmoe.cli"),
)
"""The packages from the bottom up: a module imports from its own layer's packages or from layers below.
Configs and the variant registry at the bottom; the model, the analytic sizing and the data pipeline side by
side; training above them; the sweep queue above training and the report; the CLI on top."""


def layer_of(module: str) -> int:
    """The layer of ``module``: that of the longest package prefix named in :data:`LAYERS`."""
    best, found = -1, None
    for rank, packages in enumerate(LAYERS):
        for package in packages:
            if (module == package or module.startswith(package + ".")) and len(package) > best:
                best, found = len(package), rank
    assert found is not None, f"{module} is in no layer of LAYERS"
    return found


def test_every_import_runs_down_the_layers() -> None:
    """No upward arrow: e.g. the sizing layer's estimates (mhmoe.sizing.memory) are imported by training
    (mhmoe.training.preflight), never the other way round."""
    graph = import_graph()
    upward = sorted(f"{name} -> {target}" for name, targets in graph.items() for target in targets
                    if layer_of(target) > layer_of(name))
    assert upward == []


def test_the_layer_check_sees_an_upward_arrow() -> None:
    assert layer_of("mhmoe.sizing.memory") < layer_of("mhmoe.training.preflight")
    assert layer_of("mhmoe.text_table") < layer_of("mhmoe.config.base") < layer_of("mhmoe.sweep.queue")
