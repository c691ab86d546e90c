"""The package's shape (STYLE.md, "Structure"): no import circles, even through imports
inside functions; production code never imports ``raypipe.testing``; Ray only in
``distributed/`` (and ``data.py``, the Ray Data pieces), never in ``media/`` or ``infer/``."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool() -> object:
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools/import_graph.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("lazy", [False, True], ids=["module-level", "with-function-level"])
def test_no_import_circles(lazy: bool) -> None:
    tool = _tool()
    edges = tool.graph(lazy)  # type: ignore[attr-defined]
    assert "raypipe.distributed.runner" in edges and len(edges) > 50  # the graph is real
    assert tool.circles(edges) == []  # type: ignore[attr-defined]


def test_the_circle_finder_finds_a_circle() -> None:
    tool = _tool()
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert tool.circles(edges) == [["a", "b", "c"]]  # type: ignore[attr-defined]


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_layers() -> None:
    package = ROOT / "raypipe"
    problems = []
    for path in sorted(package.rglob("*.py")):
        top = path.relative_to(package).parts[0]
        names = _imported_modules(path)
        if top != "testing":
            problems += [f"{path}: imports {n}" for n in names if n.startswith("raypipe.testing")]
            if "from raypipe import testing" in path.read_text():
                problems.append(f"{path}: from raypipe import testing")
        if top in ("media", "infer"):
            problems += [f"{path}: imports {n}" for n in names if n.split(".")[0] == "ray"]
    assert problems == []


def test_the_whole_error_tree_is_public() -> None:
    """``raypipe`` re-exports ``raypipe.errors.__all__``: every error class must be in it,
    and the cause a worker's error carries (``WorkerTraceback``, not an error of its own)."""
    import raypipe
    from raypipe import errors

    tree = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.RaypipeError)
    } | {"WorkerTraceback"}
    assert set(errors.__all__) == tree
    assert all(getattr(raypipe, name) is getattr(errors, name) for name in tree)


def test_decode_and_encode_tasks_import_no_inference_libraries() -> None:
    """A decode or encode task's worker imports ``stages`` alone: not ONNX Runtime, ONNX or
    OpenCV, which only the inference actors need (they cost every task worker its start)."""
    code = (
        "import sys, raypipe.distributed.stages; "
        "print(sorted(m for m in ('onnxruntime', 'onnx', 'cv2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
