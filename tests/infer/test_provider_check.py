"""The GPU provider checks behind ``raypipe doctor``, on stand-in libraries.

Stand-ins (:mod:`raypipe.testing.stub_library`) are real ELF shared objects that name the
libraries they need, so the dynamic loader accepts or refuses them for the reason under
test: a provider library whose ``libnvinfer.so.10`` is missing fails ``dlopen`` here exactly
as ONNX Runtime's TensorRT provider does on a machine without TensorRT.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from raypipe.infer.libraries import elf_needed, find_library, load_problem, missing_libraries
from raypipe.infer.provider_check import (
    PROVIDER_LIBRARIES,
    SHARED_PROVIDER_LIBRARY,
    DriverCheck,
    GpuStack,
    OrtBuild,
    ProviderCheck,
    check_driver,
    check_provider,
    ort_build,
    ort_distributions,
)
from raypipe.infer.session import CPU, CUDA, TENSORRT
from raypipe.testing.stub_library import write_stub_library

TRT_NEEDS = ["libnvinfer.so.10", "libnvonnxparser.so.10", "libcudart.so.13"]
CUDA_NEEDS = ["libcublas.so.13", "libcudart.so.13"]
BUILD = OrtBuild(
    package="onnxruntime-gpu", version="1.31.1", cuda_version="13.0", providers=(), capi_dir=""
)


def _absent(*names: str) -> None:
    """Skip when a library these checks need to be missing exists on this machine."""
    found = [n for n in names if find_library(n)]
    if found:
        pytest.skip(f"this machine has {found}; the stand-in check needs them missing")


def _capi(directory: Path, trt: list[str] = TRT_NEEDS, cuda: list[str] = CUDA_NEEDS) -> Path:
    """A stand-in ``onnxruntime/capi``: the shared provider library and both providers."""
    directory.mkdir(parents=True, exist_ok=True)
    write_stub_library(directory / SHARED_PROVIDER_LIBRARY, ["libc.so.6"])
    write_stub_library(directory / PROVIDER_LIBRARIES[TENSORRT], trt)
    write_stub_library(directory / PROVIDER_LIBRARIES[CUDA], cuda)
    return directory


def _deps(directory: Path, names: list[str]) -> Path:
    """Stand-ins for the libraries ``names`` (each with its soname), in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        write_stub_library(directory / name, ["libc.so.6"], soname=name)
    return directory


def _in_a_fresh_process(code: str, *args: Path, ld_library_path: Path | None = None) -> Any:
    """What ``code`` prints as JSON, run by a new Python (the loader's path is read once, at
    start, and a library loaded stays loaded: each case gets a process of its own)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if ld_library_path is not None:
        env["LD_LIBRARY_PATH"] = str(ld_library_path)
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# --- ELF and the loader ------------------------------------------------------------------


def test_elf_needed_reads_what_readelf_reads(tmp_path: Path) -> None:
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    library = next(capi.glob("libonnxruntime.so*"), None) or next(capi.glob("*.so"))
    info = elf_needed(library)
    assert "libc.so.6" in info.needed
    stub = write_stub_library(tmp_path / "libx.so", TRT_NEEDS)
    assert elf_needed(stub).needed == tuple(TRT_NEEDS) and elf_needed(stub).runpath == ()
    if shutil.which("readelf") is None:
        pytest.skip("readelf (binutils) is not installed: no independent reading to compare")
    for path in (library, stub):
        out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True).stdout
        needed = [line.split("[")[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]
        assert list(elf_needed(path).needed) == needed


def test_elf_needed_refuses_a_file_that_is_not_elf(tmp_path: Path) -> None:
    path = tmp_path / "libfake.so"
    path.write_text("not a library")
    with pytest.raises(ValueError, match="is not an ELF file"):
        elf_needed(path)


def test_a_stub_library_fails_dlopen_for_its_missing_library_and_loads_with_it(
    tmp_path: Path,
) -> None:
    _absent("libnvinfer.so.10")
    stub = write_stub_library(tmp_path / "libprovider.so", ["libnvinfer.so.10"])
    assert load_problem(stub) == (
        "libnvinfer.so.10: cannot open shared object file: No such file or directory"
    )
    assert missing_libraries(stub) == ["libnvinfer.so.10"]
    deps = _deps(tmp_path / "deps", ["libnvinfer.so.10"])
    assert missing_libraries(stub, [str(deps)]) == []
    code = "import ctypes, sys; ctypes.CDLL(sys.argv[1]); print('true')"
    assert _in_a_fresh_process(code, Path(stub), ld_library_path=deps) is True


# --- one provider ------------------------------------------------------------------------


def test_provider_library_missing_its_tensorrt_libraries(tmp_path: Path) -> None:
    capi = _capi(tmp_path / "capi")
    check = check_provider(TENSORRT, capi_dir=str(capi), dirs=[], build=BUILD)
    assert not check.loads and check.cuda_major == 13
    assert check.missing == ("libnvinfer.so.10", "libnvonnxparser.so.10", "libcudart.so.13")
    assert check.reason == "libnvinfer.so.10, libnvonnxparser.so.10, libcudart.so.13 not found"
    assert check.problem.startswith(
        "TensorrtExecutionProvider cannot load: libnvinfer.so.10, libnvonnxparser.so.10, "
        "libcudart.so.13 not found (needed by libonnxruntime_providers_tensorrt.so); install "
        "TensorRT 10 for CUDA 13 (tensorrt-cu13, in raypipe[gpu])"
    )
    assert "install CUDA 13 runtime libraries (onnxruntime-gpu[cuda]" in check.problem


def test_provider_loads_once_its_libraries_are_on_the_loader_path(tmp_path: Path) -> None:
    """In a fresh process whose LD_LIBRARY_PATH holds stand-ins of TensorRT and CUDA: the
    check finds nothing missing and the real dlopen succeeds."""
    _absent("libnvinfer.so.10", "libnvonnxparser.so.10")
    capi = _capi(tmp_path / "capi")
    deps = _deps(
        tmp_path / "deps", ["libnvinfer.so.10", "libnvonnxparser.so.10", "libcudart.so.13"]
    )
    code = (
        "import json, sys\n"
        "from raypipe.infer.provider_check import check_provider\n"
        "c = check_provider('TensorrtExecutionProvider', capi_dir=sys.argv[1])\n"
        "print(json.dumps([c.loads, list(c.missing), c.load_error, c.problem]))\n"
    )
    assert _in_a_fresh_process(code, capi, ld_library_path=deps) == [True, [], "", ""]


def test_pip_tensorrt_libraries_are_preloaded_so_the_provider_loads(tmp_path: Path) -> None:
    """pip's ``tensorrt_libs`` is on no loader path: raypipe preloads its libraries, so the
    provider's ``dlopen`` finds ``libnvinfer.so.10`` by name (fresh process, stand-ins)."""
    _absent("libnvinfer.so.10", "libnvonnxparser.so.10")
    site = tmp_path / "site"
    package = _deps(site / "tensorrt_libs", ["libnvinfer.so.10", "libnvonnxparser.so.10"])
    (package / "__init__.py").write_text("")
    capi = _capi(tmp_path / "capi", trt=["libnvinfer.so.10", "libnvonnxparser.so.10"])
    code = (
        "import json, sys\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from raypipe.infer.libraries import load_problem, preload_gpu_libraries\n"
        "from raypipe.infer.provider_check import check_provider\n"
        "before = load_problem(sys.argv[1] + '/libonnxruntime_providers_tensorrt.so')\n"
        "loaded = preload_gpu_libraries().loaded\n"
        "c = check_provider('TensorrtExecutionProvider', capi_dir=sys.argv[1])\n"
        "print(json.dumps([before, [p.rsplit('/', 1)[-1] for p in loaded], c.loads]))\n"
    )
    before, loaded, loads = _in_a_fresh_process(code, capi, site)
    assert before.startswith("libnvinfer.so.10: cannot open shared object file")
    assert loaded[-2:] == ["libnvinfer.so.10", "libnvonnxparser.so.10"]
    assert loads is True


def test_provider_not_in_a_cpu_build(tmp_path: Path) -> None:
    cpu = OrtBuild(package="onnxruntime", version="1.32.0", cuda_version="", providers=(CPU,),
                   capi_dir=str(tmp_path))  # fmt: skip
    check = check_provider(CUDA, build=cpu)
    assert not check.loads and check.library == ""
    assert check.problem == (
        "CUDAExecutionProvider is not in this ONNX Runtime build (onnxruntime 1.32.0): "
        "install raypipe[gpu] (onnxruntime-gpu), not raypipe[cpu]"
    )


def test_the_installed_onnxruntime_is_described() -> None:
    build = ort_build()
    assert build.version and build.capi_dir.endswith("capi") and CPU in build.providers
    assert build.package in ("onnxruntime", "onnxruntime-gpu")
    assert any(i.startswith(f"{build.package}==") for i in build.installed)
    if build.package == "onnxruntime":
        assert build.cuda_version == ""
        assert not check_provider(TENSORRT, build=build).library


def test_two_onnxruntime_packages_are_a_problem() -> None:
    installed = ("onnxruntime==1.32.0", "onnxruntime-gpu==1.31.1")
    both = dataclasses.replace(BUILD, installed=installed)
    assert both.problem == (
        "several ONNX Runtime packages share one 'onnxruntime' directory (onnxruntime==1.32.0, "
        "onnxruntime-gpu==1.31.1); pip uninstall all of them, then install one"
    )


def _fake_distribution(site: Path, name: str, version: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_onnxruntime_packages_are_counted_by_the_directory_they_share(tmp_path: Path) -> None:
    """Two builds in one site directory mix their files; a build in another directory of the
    path (an overlay installed with ``pip --target``, a venv over system site-packages) only
    shadows the other one, which is no problem (seen on a GPU machine whose image had the
    CPU build)."""
    mixed, overlay, system = tmp_path / "mixed", tmp_path / "overlay", tmp_path / "system"
    _fake_distribution(mixed, "onnxruntime", "1.30.0")
    _fake_distribution(mixed, "onnxruntime-gpu", "1.31.1")
    _fake_distribution(overlay, "onnxruntime-gpu", "1.31.1")
    _fake_distribution(system, "onnxruntime", "1.30.0")
    _fake_distribution(system, "numpy", "2.0.0")
    found = ort_distributions([str(mixed), str(overlay), str(system)])
    assert found == {
        os.path.realpath(mixed): ("onnxruntime-gpu==1.31.1", "onnxruntime==1.30.0"),
        os.path.realpath(overlay): ("onnxruntime-gpu==1.31.1",),
        os.path.realpath(system): ("onnxruntime==1.30.0",),
    }


# --- the driver --------------------------------------------------------------------------


def test_driver_problems() -> None:
    assert DriverCheck(library="").problem() == (
        "no NVIDIA driver: libcuda.so.1 not found (no GPU on this machine?)"
    )
    old = DriverCheck(library="libcuda.so.1", cuda_version="12.4", devices=8)
    assert old.problem(12) == "" and old.problem() == ""
    assert old.problem(13) == (
        "the NVIDIA driver is too old: it supports CUDA 12.4, this onnxruntime-gpu needs CUDA 13 "
        "(R580 driver or newer); upgrade the driver, or install the onnxruntime-gpu/TensorRT "
        "pair built for CUDA 12 (docs/gpu-stack.md)"
    )
    none = DriverCheck(library="libcuda.so.1", cuda_version="13.0", devices=0)
    assert none.problem(13).startswith("the CUDA driver sees no GPU")
    broken = DriverCheck(library="libcuda.so.1", cuda_version="13.0", error="cuInit error 999")
    assert broken.problem(13) == "the CUDA driver does not start: cuInit error 999"


def test_check_driver_without_a_driver_and_with_a_library_that_is_not_one(tmp_path: Path) -> None:
    assert check_driver(str(tmp_path / "libcuda.so.1")) == DriverCheck(library="")
    stub = write_stub_library(tmp_path / "libnotcuda.so", ["libc.so.6"])
    check = check_driver(stub)
    assert check.library == stub and check.error.startswith("not a CUDA driver library")


# --- the stack ---------------------------------------------------------------------------


def test_device_verdicts_name_every_reason_on_one_line(tmp_path: Path) -> None:
    capi = _capi(tmp_path / "capi")
    providers = {
        p: check_provider(p, capi_dir=str(capi), dirs=[], build=BUILD) for p in (TENSORRT, CUDA)
    }
    stack = GpuStack(build=BUILD, providers=providers, driver=DriverCheck(library=""))
    assert stack.device_problem("cpu") == "" and stack.device_problem("auto") == ""
    assert stack.usable() == [CPU]
    assert stack.device_problem("gpu") == (
        "no NVIDIA driver: libcuda.so.1 not found (no GPU on this machine?); TensorRT: "
        "libnvinfer.so.10, libnvonnxparser.so.10, libcudart.so.13 not found; CUDA: "
        "libcublas.so.13, libcudart.so.13 not found"
    )
    notes = stack.why_not([CPU])
    assert notes == [
        f"{TENSORRT} not used: {stack.provider_problem(TENSORRT)}",
        f"{CUDA} not used: {stack.provider_problem(CUDA)}",
    ]
    assert "libnvinfer.so.10" in notes[0] and "no NVIDIA driver" in notes[1]


def test_cpu_build_verdict() -> None:
    cpu = OrtBuild(package="onnxruntime", version="1.32.0", cuda_version="", providers=(CPU,),
                   capi_dir="")  # fmt: skip
    providers = {p: check_provider(p, build=cpu) for p in (TENSORRT, CUDA)}
    stack = GpuStack(build=cpu, providers=providers, driver=DriverCheck(library=""))
    assert stack.device_problem("gpu") == (
        "onnxruntime 1.32.0 has no CUDA or TensorRT provider (a CPU build): install raypipe[gpu] "
        "(onnxruntime-gpu) instead of raypipe[cpu]; no NVIDIA driver: libcuda.so.1 not found "
        "(no GPU on this machine?)"
    )


def test_cuda_loads_tensorrt_does_not_and_the_driver_decides() -> None:
    """Verdicts from per-provider checks (their loading is tested above): CUDA's library loads,
    TensorRT's lacks libnvinfer; ``gpu`` works with a CUDA 13 driver, not with a 12.8 one."""
    cuda = ProviderCheck(
        provider=CUDA, library="/c/libonnxruntime_providers_cuda.so", cuda_major=13
    )
    trt = ProviderCheck(provider=TENSORRT, library="/c/libonnxruntime_providers_tensorrt.so",
                        missing=("libnvinfer.so.10",), cuda_major=13)  # fmt: skip
    providers = {TENSORRT: trt, CUDA: cuda}
    driver = DriverCheck(library="libcuda.so.1", cuda_version="13.0", devices=1)
    new = GpuStack(build=BUILD, providers=providers, driver=driver)
    assert new.device_problem("gpu") == "" and new.usable() == [CUDA, CPU]
    assert new.why_not([CUDA, CPU]) == [f"{TENSORRT} not used: {new.provider_problem(TENSORRT)}"]
    assert "libnvinfer.so.10 not found" in new.why_not([CUDA, CPU])[0]
    assert new.why_not([TENSORRT, CUDA, CPU]) == []
    driver = DriverCheck(library="libcuda.so.1", cuda_version="12.8", devices=1)
    old = GpuStack(build=BUILD, providers=providers, driver=driver)
    assert old.device_problem("gpu").startswith(
        "the NVIDIA driver is too old: it supports CUDA 12.8, this onnxruntime-gpu needs CUDA 13"
    )
    assert old.usable() == [CPU]


# --- the image's smoke check (python -m raypipe.infer.provider_smoke) ------------------------


def test_smoke_check_fails_on_the_cpu_build(capsys: pytest.CaptureFixture[str]) -> None:
    from raypipe.infer.provider_smoke import main

    if ort_build().package != "onnxruntime":
        pytest.skip("needs the CPU onnxruntime")
    assert main(["tensorrt", "cuda"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"FAILED: {check_provider(TENSORRT).problem}",
        f"FAILED: {check_provider(CUDA).problem}",
    ]
    assert "is not in this ONNX Runtime build" in lines[0]


def test_smoke_check_passes_libraries_that_load_without_a_gpu(tmp_path: Path) -> None:
    """Stand-in providers whose libraries are all on LD_LIBRARY_PATH, no driver (a docker
    build): the libraries load, the session is not tried; ``--require-gpu`` fails."""
    _absent("libnvinfer.so.10", "libnvonnxparser.so.10")
    capi = _capi(tmp_path / "capi")
    deps = _deps(
        tmp_path / "deps", ["libnvinfer.so.10", "libnvonnxparser.so.10", "libcudart.so.13"]
    )
    code = (
        "import json, sys\n"
        "from raypipe.infer.provider_check import DriverCheck\n"
        "from raypipe.infer.provider_smoke import smoke_line\n"
        "none = DriverCheck(library='')\n"
        "def line(r):\n"
        "    return smoke_line('TensorrtExecutionProvider', driver=none, capi_dir=sys.argv[1],\n"
        "                      require_gpu=r)\n"
        "print(json.dumps([line(False), line(True)]))\n"
    )
    (passed, failed), (passed2, failed2) = _in_a_fresh_process(code, capi, ld_library_path=deps)
    assert failed == "" and passed == (
        "TensorrtExecutionProvider: library loads; session not tried (no NVIDIA driver: "
        "libcuda.so.1 not found (no GPU on this machine?))"
    )
    assert passed2 == "" and failed2 == (
        "TensorrtExecutionProvider: library loads, but no session: no NVIDIA driver: "
        "libcuda.so.1 not found (no GPU on this machine?)"
    )


def test_smoke_check_without_the_driver_library_at_build_time(tmp_path: Path) -> None:
    """Only the driver's libcuda.so.1 missing (a build without the CUDA stub): said, not
    failed; any other missing library fails."""
    from raypipe.infer.provider_smoke import smoke_line

    _absent("libcuda.so.1", "libcublas.so.13")
    capi = _capi(tmp_path / "capi", cuda=["libcuda.so.1"])
    none = DriverCheck(library="")
    passed, failed = smoke_line(CUDA, driver=none, capi_dir=str(capi))
    assert failed == "" and "every library it links was found except the driver's" in passed
    assert smoke_line(CUDA, driver=none, capi_dir=str(capi), require_gpu=True)[0] == ""
    capi = _capi(tmp_path / "capi2", cuda=["libcuda.so.1", "libcublas.so.13"])
    passed, failed = smoke_line(CUDA, driver=none, capi_dir=str(capi))
    assert passed == "" and "libcuda.so.1, libcublas.so.13 not found" in failed


@pytest.mark.gpu("ort-cuda", "ort-tensorrt")
def test_gpu_smoke_check_creates_a_session_with_each_provider(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from raypipe.infer.provider_smoke import main

    assert main(["tensorrt", "cuda", "--require-gpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ok: TensorrtExecutionProvider: session granted ['Tensorrt")
    assert out[1].startswith("ok: CUDAExecutionProvider: session granted ['CUDA")
