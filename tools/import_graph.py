"""The import graph of ``raypipe/``: print its circles (strongly connected components).

Usage: ``python tools/import_graph.py [--lazy]``. Module-level imports by default;
``--lazy`` also counts imports inside functions. ``if TYPE_CHECKING:`` imports never
count (they do not run). Exit status 1 when there is a circle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "raypipe"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, module: str, is_package: bool, lazy: bool) -> set[str]:
    """Names this module imports: ``from pkg import mod`` as ``pkg.mod``, ``from pkg import
    f`` as ``pkg`` (resolved against the modules that exist in :func:`graph`)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                if lazy:
                    visit(child)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = module.split(".")
                    anchor = anchor[: len(anchor) - child.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                found.update(f"{base}:{a.name}" for a in child.names)
            visit(child)

    visit(tree)
    return found


def graph(lazy: bool) -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in (ROOT / PACKAGE).rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text())
        targets = set()
        for t in _imports(tree, name, path.name == "__init__.py", lazy):
            base, _, attr = t.partition(":")
            targets.add(f"{base}.{attr}" if f"{base}.{attr}" in paths else base)
        edges[name] = {t for t in targets if t in paths and t != name}
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def main() -> int:
    lazy = "--lazy" in sys.argv
    found = circles(graph(lazy))
    for c in found:
        print("circle:", " <-> ".join(c))
    kind = "module-level and function-level" if lazy else "module-level"
    print(f"{len(found)} circle(s) in {kind} imports of {PACKAGE}/")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
