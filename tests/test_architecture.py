"""The import graph of ``src/lpa``, read with ``ast``: no cycles, and no module imports a layer above its own.

Imports inside functions and under ``TYPE_CHECKING`` count too: a cycle hidden in a function is still
a cycle to a reader and to the type checker.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import lpa

SRC = Path(lpa.__file__).resolve().parent

# Lowest first; a module may import its own layer and those below it (a package's own modules are one layer).
LAYERS: list[tuple[str, ...]] = [
    ("lpa.errors", "lpa.paths", "lpa.io", "lpa.config", "lpa.records", "lpa.registry", "lpa.plugins",
     "lpa.progress", "lpa.runs", "lpa.coherence", "lpa.hooks", "lpa.llm_client"),
    ("lpa.assets",),
    ("lpa.models",),
    ("lpa.generation", "lpa.analysis", "lpa.traits", "lpa.report", "lpa.testing"),
    ("lpa.eval",),
    ("lpa.persona",),
    ("lpa.training",),
    ("lpa.experiments",),
    ("lpa.api", "lpa.cli", "lpa"),
]



def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the lpa modules it imports (``from pkg import name`` counts as ``pkg.name`` when that is a module)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*kept, base] if base else kept)
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> int:
    best, level = "", -1
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, level = prefix, i
    assert level >= 0, f"{module} is in no layer: add it to LAYERS"
    return level


def test_no_import_cycles():
    graph = import_graph()
    assert cycles(graph) == []


def test_no_module_imports_a_layer_above_its_own():
    upward = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                    if layer_of(b) > layer_of(a))
    assert upward == []


def test_the_graph_reader_sees_a_cycle(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("lpa.eval.judges.keyword") > layer_of("lpa.report.tables")


def test_import_lpa_and_the_cli_do_not_import_torch():
    code = ("import sys, lpa, lpa.cli.main; heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
