"""Both notebooks run top to bottom on the local default, and are committed without outputs.

They run in a real Jupyter kernel (nbclient + ipykernel) started from this interpreter
through a kernelspec written to a temporary JUPYTER_PATH, with the notebooks folder as the
working directory (as when a user opens them), no cluster address and no RAY_ADDRESS.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
NAMES = ("quickstart.ipynb", "cluster.ipynb")
KERNEL = "raypipe-deploy-test"
CELL_TIMEOUT_S = 240
# What Ray prints unless raypipe keeps it off the notebook: Ray Data's progress bars and
# plan, its INFO lines, the core worker's C++ lines, the token-authentication notice, the
# widgets' hint to install ipywidgets.
RAY_LINES = (
    "Running Dataset",
    "Dataset dataset_",
    "Execution plan",
    "core_worker.cc",
    "Token authentication",
    "Missing packages",  # Ray's notebook widgets: ipywidgets, which raypipe does not use
)


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec that runs ipykernel in this very interpreter (and so this venv)."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    for name in ("RAYPIPE_CLUSTER_ADDRESS", "RAYPIPE_INPUT_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    from jupyter_client.kernelspec import KernelSpecManager

    assert KernelSpecManager().get_kernel_spec(KERNEL).argv[0] == sys.executable
    return KERNEL


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs(name: str) -> None:
    import nbformat

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom_locally(name: str, kernel: str) -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name=kernel,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "96 frames in, 96 out; same timestamps: True" in text
    assert "ExecutionProvider" in text  # the providers ONNX Runtime granted
    # raypipe's progress shows as one HTML <progress> bar; nothing from Ray itself
    bars = [o for o in outputs if "<progress" in o.get("data", {}).get("text/html", "")]
    assert len(bars) == 1, "one progress display, updated in place"
    shown = text + "".join(str(o.get("data", {})) for o in outputs)
    for ray_says in RAY_LINES:
        assert ray_says not in shown, ray_says
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2, "before/after frames and the throughput chart"
    assert not list(NOTEBOOKS.glob("*.mp4")), "notebooks write outside the repository"
    assert os.environ.get("RAYPIPE_CLUSTER_ADDRESS") is None
