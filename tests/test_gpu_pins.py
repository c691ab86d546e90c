"""The GPU stack's pins agree everywhere: pyproject's ``gpu`` extra, cluster/Dockerfile,
cluster/runtime_env.yaml and the table of docs/gpu-stack.md (tools/gpu_pins.py)."""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from raypipe.testing.stub_library import stub_library_bytes

REPO = Path(__file__).resolve().parents[1]


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_pins", REPO / "tools" / "gpu_pins.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_pins"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


pins = _tool()
TEXTS = {
    "doc_text": pins.DOC.read_text(),
    "pyproject": pins.PYPROJECT.read_text(),
    "dockerfile": pins.DOCKERFILE.read_text(),
    "runtime_env": pins.RUNTIME_ENV.read_text(),
}


def test_the_pins_agree_with_the_docs_table() -> None:
    assert pins.problems(**TEXTS) == []
    assert pins.main(["check"]) == 0
    doc = pins.doc_pins(TEXTS["doc_text"])
    assert (doc.onnxruntime_gpu, doc.tensorrt, doc.cuda_major, doc.image) == (
        "1.31.1",
        "tensorrt-cu13==10.16.1.11",
        "13",
        "rayproject/ray:2.60.0-py311-cu130",
    )
    row = pins.doc_needed(TEXTS["doc_text"])["1.31.1"]
    assert "libcudart.so.13" in row["cuda"] and "libnvinfer.so.10" in row["tensorrt"]


def _edit(name: str, old: str, new: str) -> dict[str, str]:
    assert old in TEXTS[name], f"{old!r} is not in {name}"
    return {**TEXTS, name: TEXTS[name].replace(old, new)}


@pytest.mark.parametrize(
    ("name", "old", "new", "expected"),
    [
        (
            "pyproject",
            '"onnxruntime-gpu[cuda,cudnn]==1.31.1"',
            '"onnxruntime-gpu[cuda,cudnn]==1.30.0"',
            "pyproject.toml [gpu] pins onnxruntime-gpu 1.30.0, the docs 1.31.1",
        ),
        (
            "pyproject",
            '"tensorrt-cu13==10.16.1.11"',
            '"tensorrt>=10"',
            "pyproject.toml [gpu] pins tensorrt>=10, the docs tensorrt-cu13==10.16.1.11",
        ),
        (
            "runtime_env",
            '"tensorrt-cu13==10.16.1.11"',
            '"tensorrt-cu12==10.16.1.11"',
            "cluster/runtime_env.yaml pins tensorrt-cu12==10.16.1.11, the docs "
            "tensorrt-cu13==10.16.1.11",
        ),
        (
            "dockerfile",
            "ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cu130",
            "ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu",
            "cluster/Dockerfile's image is CUDA ? (no -cuXY tag), the stack is CUDA 13",
        ),
        (
            "dockerfile",
            "ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cu130",
            "ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cu128",
            "cluster/Dockerfile's image is CUDA 12, the stack is CUDA 13",
        ),
        (
            "dockerfile",
            'pip install --no-cache-dir ".[gpu]"',
            'pip install --no-cache-dir "."',
            'cluster/Dockerfile does not pip install ".[gpu]" (the pinned stack)',
        ),
        (
            "doc_text",
            "| tensorrt | tensorrt-cu13==10.16.1.11 |",
            "| tensorrt | tensorrt-cu12==10.16.1.11 |",
            "tensorrt-cu12==10.16.1.11 is built for CUDA 12, the stack is CUDA 13",
        ),
        (
            "doc_text",
            "| tensorrt | tensorrt-cu13==10.16.1.11 |",
            "| tensorrt | tensorrt-cu13==11.4.0.106 |",
            "onnxruntime-gpu 1.31.1's TensorRT provider links libnvinfer.so.10, the pin is "
            "TensorRT 11",
        ),
        (
            "doc_text",
            "| onnxruntime-gpu | 1.31.1 |",
            "| onnxruntime-gpu | 1.26.0 |",
            "onnxruntime-gpu 1.26.0's CUDA provider links libcudart.so.12, the stack is CUDA 13",
        ),
    ],
)
def test_each_disagreement_is_named(name: str, old: str, new: str, expected: str) -> None:
    assert expected in pins.problems(**_edit(name, old, new))


def test_a_version_missing_from_the_needed_table_asks_for_derive() -> None:
    texts = _edit("doc_text", "| onnxruntime-gpu | 1.31.1 |", "| onnxruntime-gpu | 1.32.0 |")
    texts = {**texts, "pyproject": texts["pyproject"].replace("==1.31.1", "==1.32.0")}
    texts = {**texts, "runtime_env": texts["runtime_env"].replace("==1.31.1", "==1.32.0")}
    assert pins.problems(**texts) == [
        "the NEEDED table has no row for onnxruntime-gpu 1.32.0: run python tools/gpu_pins.py "
        "derive --write"
    ]


def test_the_table_is_derived_from_a_wheels_provider_libraries(tmp_path: Path) -> None:
    """``derive``'s reading of one wheel, on a wheel made of stand-in provider libraries."""
    wheel = tmp_path / "onnxruntime_gpu-9.9.9-cp311-cp311-manylinux_2_28_x86_64.whl"
    cuda = ["libcublas.so.13", "libstdc++.so.6", "libcudart.so.13", "libcuda.so.1"]
    trt = ["libnvinfer.so.10", "libnvonnxparser.so.10", "libcudart.so.13", "libcudnn.so.9"]
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(
            "onnxruntime/capi/build_and_package_info.py",
            "package_name = 'onnxruntime-gpu'\n__version__ = '9.9.9'\ncuda_version = '13.0'\n",
        )
        z.writestr("onnxruntime/capi/libonnxruntime_providers_cuda.so", stub_library_bytes(cuda))
        z.writestr("onnxruntime/capi/libonnxruntime_providers_tensorrt.so", stub_library_bytes(trt))
    row = pins.wheel_row(wheel)
    assert row == [
        "9.9.9",
        "13.0",
        "libcublas.so.13, libcudart.so.13, libcuda.so.1",
        "libnvinfer.so.10, libnvonnxparser.so.10, libcudart.so.13, libcudnn.so.9",
    ]
    table = pins.needed_table([row])
    assert pins.doc_needed(f"<!-- needed:begin -->\n{table}\n<!-- needed:end -->") == {
        "9.9.9": {"cuda_build": "13.0", "cuda": row[2], "tensorrt": row[3]}
    }


def test_gpu_machines_install_the_tests_with_the_gpu_build() -> None:
    def extra(name: str) -> list[str]:
        return list(pins.extra_requirements(TEXTS["pyproject"], name))

    assert extra("gpu")[:2] == ["onnxruntime-gpu[cuda,cudnn]==1.31.1", "tensorrt-cu13==10.16.1.11"]
    assert extra("test") == ["raypipe[test-common]", "onnxruntime>=1.18"]
    assert extra("test-gpu") == ["raypipe[test-common,gpu]"]
    assert not [r for r in extra("test-common") if r.startswith("onnxruntime")]
    assert 'pip install -e ".[test-gpu]"' in (REPO / "README.md").read_text()
