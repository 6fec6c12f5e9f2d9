"""The package's import graph, read from the source with `ast`: no import circle anywhere in
`dualnet/`, kernels never import layers, layers never import kernels.

Every import statement counts, also those inside functions (a lazy import is still a
dependency, and a circle through one only waits for the wrong call order to break). An edge
goes to the module an import names: `from . import x` names submodule `x` when there is one,
else the package's `__init__`; parents a submodule import loads implicitly are not edges.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dualnet"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an `ImportFrom` node starts from."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """module -> the dualnet modules it imports."""
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(name, is_package, node)
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.append(sub if sub in modules else source)
            for target in targets:
                # `import dualnet.a.b` also names `dualnet.a.b` only
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_the_graph_sees_the_imports_it_should():
    graph = import_graph()
    assert "dualnet.backend" in graph["dualnet._checks"]
    assert "dualnet.backends.conv" in graph["dualnet.layers.conv"]
    assert "dualnet.kernels.reference" in graph["dualnet.backends.base"]


def test_find_cycle_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


@pytest.mark.parametrize("importer, forbidden", [("dualnet.kernels", "dualnet.layers"),
                                                 ("dualnet.layers", "dualnet.kernels")])
def test_kernels_and_layers_never_import_each_other(importer, forbidden):
    bad = sorted(f"{module} -> {target}" for module, targets in import_graph().items()
                 if module == importer or module.startswith(importer + ".")
                 for target in targets
                 if target == forbidden or target.startswith(forbidden + "."))
    assert bad == []
