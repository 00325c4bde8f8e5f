"""The package's shape: no import circle (type-only imports included), small modules, and the
library core independent of the studies, the benchmarks and the command line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "smoothkern"
MAX_LINES = 420          # "no module over ~400 lines"
BESIDE = ("smoothkern.studies", "smoothkern.bench", "smoothkern.cli")


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


def _target(name: str, package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = name.split(".") if package else name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """Module → the smoothkern modules it imports at import time: module level, including
    ``if``/``try`` blocks (``TYPE_CHECKING`` imports count), not inside functions."""
    modules = _modules()
    out = {}
    for name, (path, package) in modules.items():
        deps = set()
        for top in ast.parse(path.read_text()).body:
            for node in ast.walk(top) if isinstance(top, ast.If | ast.Try) else [top]:
                if isinstance(node, ast.ImportFrom):
                    target = _target(name, package, node)
                    deps |= {f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target
                             for a in node.names}
                elif isinstance(node, ast.Import):
                    deps |= {a.name for a in node.names}
        out[name] = {d for d in deps if d in modules and d != name}
    return out


def test_the_import_graph_has_no_circle(graph):
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                circle = path[path.index(dep):] + [dep]
                pytest.fail("import circle: " + " -> ".join(circle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_library_core_imports_nothing_beside_it(graph):
    for name, deps in graph.items():
        if name.startswith(BESIDE) or name in ("smoothkern.__main__", "smoothkern.dataset.command"):
            continue      # `python -m smoothkern` is the CLI; the data-set command takes its
            #               argument types from it
        bad = sorted(d for d in deps if d.startswith(BESIDE))
        assert not bad, f"{name} imports {bad}"


def test_no_module_is_longer_than_about_400_lines():
    long = {str(p.relative_to(ROOT.parent)): n for p in ROOT.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
