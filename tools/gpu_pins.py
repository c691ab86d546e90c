"""The GPU stack's pins: re-derive their table from the wheels, and check that every place
that pins them agrees with it.

    python tools/gpu_pins.py derive                      # NEEDED table of the pinned wheels
    python tools/gpu_pins.py derive --onnxruntime-gpu 1.26.0 1.31.1 --write
    python tools/gpu_pins.py check                       # what tests/test_gpu_pins.py checks

``derive`` downloads onnxruntime-gpu wheels from PyPI (``pip download --no-deps``, cached in
``--download-dir``), reads the ``DT_NEEDED`` entries of their CUDA and TensorRT provider
libraries (``readelf -d`` in pure Python: :func:`raypipe.infer.libraries.elf_needed`) and
the CUDA version they were built with, and prints the markdown table docs/gpu-stack.md
holds between ``<!-- needed:begin -->`` and ``<!-- needed:end -->`` (``--write`` replaces
it there). It also asks PyPI which ``tensorrt-cuNN`` versions exist for the pinned major:
TensorRT's libraries themselves come from pypi.nvidia.com at install time, so their own
NEEDED entries are read only where that index can be reached (``--tensorrt-libs``).

``check`` reads the pins table of docs/gpu-stack.md (``<!-- pins:begin -->`` ...) and
reports every disagreement with pyproject.toml's ``gpu`` extra, cluster/Dockerfile's base
image and install, cluster/runtime_env.yaml's pip block, and the NEEDED table: the CUDA
major the pinned onnxruntime-gpu links must be the image's and TensorRT's flavour's, and
the TensorRT major its TensorRT provider links must be the pinned TensorRT's.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "gpu-stack.md"
PYPROJECT = REPO / "pyproject.toml"
DOCKERFILE = REPO / "cluster" / "Dockerfile"
RUNTIME_ENV = REPO / "cluster" / "runtime_env.yaml"
PROVIDERS = {
    "cuda": "libonnxruntime_providers_cuda.so",
    "tensorrt": "libonnxruntime_providers_tensorrt.so",
}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64")
INTERESTING = re.compile(
    r"^lib(cudart|cublas|cublasLt|cudnn|curand|cufft|nvrtc|nvinfer|nvinfer_plugin|nvonnxparser|cuda)\.so"
)


# --- reading the places that pin -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Pins:
    """One place's pins; "" where that place does not say."""

    where: str
    onnxruntime_gpu: str = ""  # "1.31.1"
    tensorrt: str = ""  # "tensorrt-cu13==10.16.1.11"
    cuda_major: str = ""  # "13"
    image: str = ""  # "rayproject/ray:2.60.0-py311-cu130"


def _block(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:begin -->(.*?)<!-- {name}:end -->", text, re.S)
    if not match:
        raise ValueError(f"no <!-- {name}:begin --> ... <!-- {name}:end --> block")
    return match.group(1)


def _rows(table: str) -> list[list[str]]:
    rows = [
        [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        for line in table.splitlines()
        if line.strip().startswith("|")
    ]
    return [r for r in rows[2:]]  # without the header and its rule


def doc_pins(text: str) -> Pins:
    """The pins table of docs/gpu-stack.md: rows ``| what | pin |``."""
    table = {row[0]: row[1] for row in _rows(_block(text, "pins"))}
    return Pins(
        where="docs/gpu-stack.md",
        onnxruntime_gpu=table.get("onnxruntime-gpu", ""),
        tensorrt=table.get("tensorrt", ""),
        cuda_major=table.get("CUDA major", ""),
        image=table.get("Ray image", ""),
    )


def doc_needed(text: str) -> dict[str, dict[str, str]]:
    """The NEEDED table: onnxruntime-gpu version -> {cuda_build, cuda, tensorrt}."""
    return {
        row[0]: {"cuda_build": row[1], "cuda": row[2], "tensorrt": row[3]}
        for row in _rows(_block(text, "needed"))
    }


def _requirement_pins(requirements: list[str], where: str) -> Pins:
    ort = next((r for r in requirements if re.match(r"onnxruntime-gpu(\[|=)", r)), "")
    trt = next((r for r in requirements if r.startswith("tensorrt")), "")
    version = re.search(r"==([\w.]+)$", ort)
    trt_flavour = re.match(r"tensorrt-cu(\d+)==", trt)
    return Pins(
        where=where,
        onnxruntime_gpu=version.group(1) if version else ort,
        tensorrt=trt,
        cuda_major=trt_flavour.group(1) if trt_flavour else "",
    )


def extra_requirements(pyproject: str, extra: str) -> list[str]:
    """The requirements of ``extra`` in pyproject.toml's text (``name = [...]``, one line or
    several; read without a TOML parser so that Python 3.10 needs nothing more)."""
    match = re.search(rf"^{re.escape(extra)} = \[(.*?)\]\s*(?:#[^\n]*)?$", pyproject, re.M | re.S)
    return re.findall(r'"([^"]+)"', match.group(1)) if match else []


def pyproject_pins(text: str) -> Pins:
    """The ``gpu`` extra of pyproject.toml."""
    return _requirement_pins(extra_requirements(text, "gpu"), "pyproject.toml [gpu]")


def runtime_env_pins(text: str) -> Pins:
    """The (commented) ``pip: packages:`` line of cluster/runtime_env.yaml."""
    match = re.search(r"^#?\s*packages:\s*\[(.*onnxruntime-gpu.*)\]", text, re.M)
    packages = re.findall(r'"([^"]+)"', match.group(1)) if match else []
    return _requirement_pins(packages, "cluster/runtime_env.yaml")


def dockerfile_pins(text: str) -> Pins:
    """cluster/Dockerfile: its base image, and the extra it installs (must be ``.[gpu]``)."""
    image = re.search(r"^ARG RAY_IMAGE=(\S+)", text, re.M)
    tag = re.search(r"-cu(\d+)$", image.group(1)) if image else None
    installs_gpu = re.search(r'pip install[^\n]*"\.\[gpu\]"', text) is not None
    return Pins(
        where="cluster/Dockerfile",
        image=image.group(1) if image else "",
        cuda_major=tag.group(1)[:-1] if tag else "",  # cu130 -> 13, cu128 -> 12
        onnxruntime_gpu="(pyproject.toml [gpu])" if installs_gpu else "",
    )


def problems(doc_text: str, pyproject: str, dockerfile: str, runtime_env: str) -> list[str]:
    """Every disagreement between the pins table and the places that pin (see the docstring)."""
    doc = doc_pins(doc_text)
    out: list[str] = []
    if not (doc.onnxruntime_gpu and doc.tensorrt and doc.cuda_major and doc.image):
        return [f"docs/gpu-stack.md's pins table is incomplete: {doc}"]
    for pins in (pyproject_pins(pyproject), runtime_env_pins(runtime_env)):
        if pins.onnxruntime_gpu != doc.onnxruntime_gpu:
            out.append(
                f"{pins.where} pins onnxruntime-gpu {pins.onnxruntime_gpu or 'nothing'}, "
                f"the docs {doc.onnxruntime_gpu}"
            )
        if pins.tensorrt != doc.tensorrt:
            out.append(
                f"{pins.where} pins {pins.tensorrt or 'no TensorRT'}, the docs {doc.tensorrt}"
            )
    docker = dockerfile_pins(dockerfile)
    if docker.image != doc.image:
        out.append(
            f"cluster/Dockerfile builds on {docker.image or 'nothing'}, the docs say {doc.image}"
        )
    if docker.cuda_major != doc.cuda_major:
        out.append(
            f"cluster/Dockerfile's image is CUDA {docker.cuda_major or '? (no -cuXY tag)'}, "
            f"the stack is CUDA {doc.cuda_major}"
        )
    if not docker.onnxruntime_gpu:
        out.append('cluster/Dockerfile does not pip install ".[gpu]" (the pinned stack)')
    flavour = re.match(r"tensorrt-cu(\d+)==(\d+)\.", doc.tensorrt)
    if not flavour:
        return [*out, f"the docs' TensorRT pin {doc.tensorrt!r} is not tensorrt-cuNN==X.Y..."]
    if flavour.group(1) != doc.cuda_major:
        out.append(
            f"{doc.tensorrt} is built for CUDA {flavour.group(1)}, "
            f"the stack is CUDA {doc.cuda_major}"
        )
    needed = doc_needed(doc_text).get(doc.onnxruntime_gpu)
    if needed is None:
        return [
            *out,
            f"the NEEDED table has no row for onnxruntime-gpu {doc.onnxruntime_gpu}: "
            "run python tools/gpu_pins.py derive --write",
        ]
    cudart = re.search(r"libcudart\.so\.(\d+)", needed["cuda"])
    if not cudart or cudart.group(1) != doc.cuda_major:
        out.append(
            f"onnxruntime-gpu {doc.onnxruntime_gpu}'s CUDA provider links "
            f"{cudart.group(0) if cudart else 'no libcudart'}, the stack is CUDA {doc.cuda_major}"
        )
    nvinfer = re.search(r"libnvinfer\.so\.(\d+)", needed["tensorrt"])
    if not nvinfer or nvinfer.group(1) != flavour.group(2):
        out.append(
            f"onnxruntime-gpu {doc.onnxruntime_gpu}'s TensorRT provider links "
            f"{nvinfer.group(0) if nvinfer else 'no libnvinfer'}, "
            f"the pin is TensorRT {flavour.group(2)}"
        )
    return out


def check_repository() -> list[str]:
    return problems(
        DOC.read_text(), PYPROJECT.read_text(), DOCKERFILE.read_text(), RUNTIME_ENV.read_text()
    )


# --- deriving the table from the wheels ------------------------------------------------------


def wheel_row(wheel: Path) -> list[str]:
    """``[version, cuda build, CUDA provider's CUDA libraries, TensorRT provider's]`` of an
    onnxruntime-gpu wheel, from its provider libraries' NEEDED entries."""
    sys.path.insert(0, str(REPO))
    from raypipe.infer.libraries import elf_needed

    with zipfile.ZipFile(wheel) as z, tempfile.TemporaryDirectory() as tmp:
        names = z.namelist()
        info = next((n for n in names if n.endswith("capi/build_and_package_info.py")), None)
        text = z.read(info).decode() if info else ""
        version = re.search(r"__version__ = '([^']+)'", text)
        cuda = re.search(r"cuda_version = '([^']*)'", text)
        cells = []
        for provider in ("cuda", "tensorrt"):
            member = next((n for n in names if n.endswith("capi/" + PROVIDERS[provider])), None)
            if member is None:
                cells.append("(none)")
                continue
            path = Path(z.extract(member, tmp))
            needed = [n for n in elf_needed(path).needed if INTERESTING.match(n)]
            cells.append(", ".join(needed))
    return [version.group(1) if version else wheel.name, cuda.group(1) if cuda else "", *cells]


def _pip_download(spec: str, directory: Path, *extra: str) -> Path:
    before = set(directory.glob("*"))
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(directory), *extra]
    if "--no-binary" not in extra:
        cmd += ["--only-binary=:all:", "--python-version", "3.11", *platforms]
    subprocess.run([*cmd, spec], check=True, capture_output=True, text=True)
    name = re.split(r"[=<>\[]", spec)[0].replace("-", "_")
    version = spec.split("==")[-1]
    found = [p for p in directory.glob(f"{name}-{version}*")] or sorted(
        set(directory.glob("*")) - before
    )
    if not found:
        raise FileNotFoundError(f"pip download {spec} left no file in {directory}")
    return found[0]


def needed_table(rows: list[list[str]]) -> str:
    head = ["onnxruntime-gpu", "built for CUDA", "CUDA provider links", "TensorRT provider links"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += [
        "| " + " | ".join(f"`{c}`" if i > 1 else c for i, c in enumerate(r)) + " |" for r in rows
    ]
    return "\n".join(lines)


def derive(versions: list[str], directory: Path, tensorrt_libs: str | None) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    rows = [wheel_row(_pip_download(f"onnxruntime-gpu=={v}", directory)) for v in versions]
    out = [needed_table(rows)]
    if tensorrt_libs:
        try:
            wheel = _pip_download(
                tensorrt_libs, directory, "--index-url", "https://pypi.nvidia.com"
            )
        except subprocess.CalledProcessError as e:
            out.append(
                f"\n{tensorrt_libs}: not inspected (pip download failed: "
                f"{(e.stderr or '').strip().splitlines()[-1:]})"
            )
        else:
            out.append(f"\n{tensorrt_libs}: {wheel.name}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("derive", help="the NEEDED table from the wheels (downloads from PyPI)")
    d.add_argument(
        "--onnxruntime-gpu",
        nargs="+",
        default=None,
        help="versions (default: the pinned one and those the table lists)",
    )
    d.add_argument(
        "--download-dir", type=Path, default=Path(tempfile.gettempdir()) / "raypipe-wheels"
    )
    d.add_argument("--tensorrt-libs", default=None, help="e.g. tensorrt-cu13-libs==10.16.1.11")
    d.add_argument("--write", action="store_true", help="replace the table in docs/gpu-stack.md")
    sub.add_parser("check", help="the pins agree with docs/gpu-stack.md (as the test does)")
    args = p.parse_args(argv)
    if args.command == "check":
        found = check_repository()
        for problem in found:
            print(f"pins disagree: {problem}")
        print("pins agree" if not found else f"{len(found)} disagreement(s)")
        return 1 if found else 0
    text = DOC.read_text()
    versions = args.onnxruntime_gpu or list(
        dict.fromkeys([*doc_needed(text), doc_pins(text).onnxruntime_gpu])
    )
    table = derive(versions, args.download_dir, args.tensorrt_libs)
    print(table)
    if args.write:
        block = table.split("\n\n")[0]
        new, count = re.subn(
            r"<!-- needed:begin -->.*?<!-- needed:end -->",
            lambda m: f"<!-- needed:begin -->\n{block}\n<!-- needed:end -->",
            text,
            flags=re.S,
        )
        if count != 1:
            raise SystemExit(f"{DOC} has no <!-- needed:begin --> ... <!-- needed:end --> block")
        DOC.write_text(new)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
