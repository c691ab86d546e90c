"""Why ONNX Runtime can or cannot run on the GPU here: its build, its GPU providers' libraries,
the CUDA driver. Used by ``raypipe doctor`` and by the inference actors (whose run stats then
say why TensorRT or CUDA was not used).

ONNX Runtime implements its CUDA and TensorRT providers as shared libraries next to its
Python module (``onnxruntime/capi/libonnxruntime_providers_{cuda,tensorrt}.so``) and loads
them when a session asks for the provider; if one cannot load it says little and, without
``enable_fallback=0``, runs on the CPU. :func:`check_provider` does what it does — load
``libonnxruntime_providers_shared.so``, then the provider's library, after
:func:`raypipe.infer.libraries.preload_gpu_libraries` as raypipe's sessions do — and names
the libraries the loader cannot find (``libnvinfer.so.10``, ``libcudart.so.13``), read from
the library's ``DT_NEEDED`` entries. :func:`check_driver` asks the CUDA driver (``libcuda``)
for its CUDA version and device count; a driver older than the CUDA major a provider links
(``libcudart.so.13`` -> CUDA 13) cannot run it.

``capi_dir`` and ``dirs`` (the library search path) can point the checks elsewhere: tests use
stand-in libraries (:mod:`raypipe.testing.stub_library`). Nothing here raises for a missing
piece: each check returns what it found and a one-line ``problem``.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from raypipe.infer.libraries import (
    elf_needed,
    load_problem,
    missing_libraries,
    preload_gpu_libraries,
)
from raypipe.infer.session import CPU, CUDA, TENSORRT

PROVIDER_LIBRARIES = {
    TENSORRT: "libonnxruntime_providers_tensorrt.so",
    CUDA: "libonnxruntime_providers_cuda.so",
}
SHORT_NAMES = {TENSORRT: "TensorRT", CUDA: "CUDA", CPU: "CPU"}
SHARED_PROVIDER_LIBRARY = "libonnxruntime_providers_shared.so"
# The oldest NVIDIA driver branch for each CUDA major (CUDA's release notes, Linux x86-64).
MIN_DRIVER_FOR_CUDA = {11: "R450", 12: "R525", 13: "R580"}
_CUDART = re.compile(r"^libcudart\.so\.(\d+)$")


@dataclass(frozen=True, kw_only=True)
class OrtBuild:
    """The installed ONNX Runtime: distribution, version, CUDA build, providers, where."""

    package: str  # "onnxruntime-gpu", "onnxruntime", "" when it cannot be imported
    version: str
    cuda_version: str  # the CUDA it was built with ("13.0"), "" for a CPU build
    providers: tuple[str, ...]  # get_available_providers()
    capi_dir: str  # where its native libraries are
    # the onnxruntime* distributions installed in the imported package's directory
    # ("name==version"); one elsewhere on sys.path (a --target overlay, a venv over
    # system site-packages) is shadowed, not mixed in, and is not listed
    installed: tuple[str, ...] = ()
    error: str = ""  # why it cannot be imported

    @property
    def problem(self) -> str:
        if self.error:
            return (
                f"onnxruntime cannot be imported ({self.error}); install raypipe[gpu] "
                "(onnxruntime-gpu) or raypipe[cpu]"
            )
        if len(self.installed) > 1:
            return (
                f"several ONNX Runtime packages share one 'onnxruntime' directory "
                f"({', '.join(self.installed)}); pip uninstall all of them, then install one"
            )
        return ""


def ort_build() -> OrtBuild:
    """What :class:`OrtBuild` says about this process's ``onnxruntime``."""
    found = ort_distributions()
    try:
        import onnxruntime
    except ImportError as e:
        installed = max(found.values(), key=len, default=())
        return OrtBuild(
            package="",
            version="",
            cuda_version="",
            providers=(),
            capi_dir="",
            installed=installed,
            error=str(e),
        )
    try:
        from onnxruntime.capi import build_and_package_info as info

        package = str(getattr(info, "package_name", "") or "onnxruntime")
        cuda_version = str(getattr(info, "cuda_version", "") or "")
    except ImportError:
        package, cuda_version = "onnxruntime", ""
    site = os.path.realpath(os.path.dirname(os.path.dirname(onnxruntime.__file__)))
    installed = found.get(site, ())
    return OrtBuild(
        package=package,
        version=str(onnxruntime.__version__),
        cuda_version=cuda_version,
        providers=tuple(onnxruntime.get_available_providers()),
        capi_dir=os.path.join(os.path.dirname(onnxruntime.__file__), "capi"),
        installed=installed,
    )


ORT_BUILDS = ("gpu", "directml", "openvino", "qnn", "rocm", "migraphx", "training", "cann",
              "vitisai", "webgpu")  # fmt: skip
ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "ort-nightly",
    "ort-nightly-gpu",
    *(f"onnxruntime-{build}" for build in ORT_BUILDS),
)
"""The distributions that install the ``onnxruntime`` package (CPU, GPU and the other builds
all do, and installing two of them in one directory mixes their files)."""


def ort_distributions(path: list[str] | None = None) -> dict[str, tuple[str, ...]]:
    """Every onnxruntime* distribution on ``path`` (default ``sys.path``) as "name==version",
    by the directory it is installed in (resolved). Two in one directory overwrite each
    other's files in its ``onnxruntime`` package; two in different directories do not.

    Looked up by name (from the ``.dist-info`` folders' names), not by reading every
    distribution's metadata, which took 0.09 s (0.007 s now) in each inference actor's
    start with the test extras' 155 distributions installed."""
    found: dict[str, set[str]] = {}
    search = path if path is not None else sys.path
    for wanted in ORT_DISTRIBUTIONS:
        for dist in importlib.metadata.distributions(name=wanted, path=search):
            where = os.path.realpath(str(dist.locate_file("")))
            found.setdefault(where, set()).add(f"{dist.metadata['Name']}=={dist.version}")
    return {where: tuple(sorted(names)) for where, names in found.items()}


@dataclass(frozen=True, kw_only=True)
class ProviderCheck:
    """Whether one GPU provider's library loads here, and if not, why."""

    provider: str
    library: str  # the provider library's path, "" when this onnxruntime has none
    missing: tuple[str, ...] = ()  # its DT_NEEDED libraries the loader cannot find
    load_error: str = ""  # dlopen's error, "" when it loaded
    cuda_major: int | None = None  # the CUDA major it links (libcudart.so.N)
    package: str = ""  # "onnxruntime 1.32.0", for messages

    @property
    def loads(self) -> bool:
        return bool(self.library) and not self.missing and not self.load_error

    @property
    def reason(self) -> str:
        """``""`` when it loads, else what stops it, briefly ("libnvinfer.so.10 not found")."""
        if not self.library:
            return f"not in this ONNX Runtime build ({self.package or 'none'})"
        if self.missing:
            return f"{', '.join(self.missing)} not found"
        return self.load_error

    @property
    def problem(self) -> str:
        """``""`` when it loads, else one line: what is missing and what to install."""
        if not self.library:
            return (
                f"{self.provider} is not in this ONNX Runtime build ({self.package or 'none'}): "
                "install raypipe[gpu] (onnxruntime-gpu), not raypipe[cpu]"
            )
        if self.missing:
            return (
                f"{self.provider} cannot load: {self.reason} (needed by "
                f"{os.path.basename(self.library)}); {_hint(self.missing, self.cuda_major)}"
            )
        if self.load_error:
            return f"{self.provider} cannot load: {self.load_error}"
        return ""


def _hint(missing: Sequence[str], cuda_major: int | None) -> str:
    cuda = f"cu{cuda_major}" if cuda_major else "cuNN"
    hints = []
    if any(m.startswith(("libnvinfer", "libnvonnxparser")) for m in missing):
        hints.append(
            f"install TensorRT 10 for CUDA {cuda_major or 'NN'} (tensorrt-{cuda}, in "
            "raypipe[gpu]) or put its lib directory on LD_LIBRARY_PATH"
        )
    if any(m.startswith(("libcudart", "libcublas", "libcurand", "libcufft")) for m in missing):
        hints.append(
            f"install CUDA {cuda_major or ''} runtime libraries (onnxruntime-gpu[cuda], in "
            "raypipe[gpu]) or use an image with them (docs/gpu-stack.md)"
        )
    if any(m.startswith("libcudnn") for m in missing):
        hints.append(f"install cuDNN 9 (nvidia-cudnn-{cuda}, onnxruntime-gpu[cudnn])")
    if "libcuda.so.1" in missing:
        hints.append("libcuda.so.1 is the NVIDIA driver: install it, or run on a GPU machine")
    return "; ".join(hints) or "put the directory holding them on LD_LIBRARY_PATH"


def check_provider(
    provider: str,
    *,
    capi_dir: str | None = None,
    dirs: Sequence[str] | None = None,
    build: OrtBuild | None = None,
) -> ProviderCheck:
    """Load ``provider``'s library the way ONNX Runtime does and say what stops it.

    ``capi_dir``: where the provider libraries are (default: the installed onnxruntime's
    ``capi``); ``dirs``: where to look for their dependencies (default: the loader's search
    path, see :func:`raypipe.infer.libraries.search_dirs`). The ``dlopen`` is real: a
    library that loads stays loaded in this process.
    """
    if provider not in PROVIDER_LIBRARIES:
        raise ValueError(f"provider must be one of {list(PROVIDER_LIBRARIES)}, got {provider!r}")
    build = build if build is not None else ort_build()
    package = f"{build.package} {build.version}".strip()
    directory = capi_dir if capi_dir is not None else build.capi_dir
    path = os.path.join(directory, PROVIDER_LIBRARIES[provider]) if directory else ""
    if not path or not os.path.isfile(path):
        return ProviderCheck(provider=provider, library="", package=package)
    try:
        info = elf_needed(path)
    except (OSError, ValueError) as e:
        return ProviderCheck(provider=provider, library=path, load_error=str(e), package=package)
    cuda_major = next((int(m.group(1)) for n in info.needed if (m := _CUDART.match(n))), None)
    missing = tuple(missing_libraries(path, dirs))
    if missing:  # the loader would stop at the first; say all of them
        return ProviderCheck(
            provider=provider, library=path, missing=missing, cuda_major=cuda_major, package=package
        )
    preload_gpu_libraries()
    shared = os.path.join(directory, SHARED_PROVIDER_LIBRARY)
    error = load_problem(path, preload=[shared] if os.path.isfile(shared) else [])
    return ProviderCheck(
        provider=provider, library=path, load_error=error, cuda_major=cuda_major, package=package
    )


@dataclass(frozen=True, kw_only=True)
class DriverCheck:
    """What the CUDA driver (``libcuda``) says: its CUDA version and the visible devices."""

    library: str  # "libcuda.so.1" when it loaded, "" when there is no driver
    cuda_version: str = ""  # the newest CUDA it supports, "13.0"
    devices: int = 0  # CUDA devices visible to this process (CUDA_VISIBLE_DEVICES applies)
    error: str = ""  # cuInit's failure

    @property
    def cuda_major(self) -> int | None:
        return int(self.cuda_version.split(".")[0]) if self.cuda_version else None

    def problem(self, needs_cuda_major: int | None = None) -> str:
        """``""`` when a CUDA device can run code built for ``needs_cuda_major``, else why."""
        if not self.library:
            return "no NVIDIA driver: libcuda.so.1 not found (no GPU on this machine?)"
        major = self.cuda_major
        if needs_cuda_major and major is not None and major < needs_cuda_major:
            driver = MIN_DRIVER_FOR_CUDA.get(needs_cuda_major, "a newer")
            return (
                f"the NVIDIA driver is too old: it supports CUDA {self.cuda_version}, this "
                f"onnxruntime-gpu needs CUDA {needs_cuda_major} ({driver} driver or newer); "
                "upgrade the driver, or install the onnxruntime-gpu/TensorRT pair built for "
                f"CUDA {major} (docs/gpu-stack.md)"
            )
        if self.error:
            return f"the CUDA driver does not start: {self.error}"
        if self.devices == 0:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            shown = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
            return f"the CUDA driver sees no GPU{shown}"
        return ""


_CU_ERRORS = {100: "no CUDA-capable device", 35: "driver older than the CUDA runtime",
              34: "a stub libcuda, not a driver (no GPU at build time?)",
              999: "unknown error", 3: "not initialized", 101: "invalid device"}  # fmt: skip


def check_driver(library: str = "libcuda.so.1") -> DriverCheck:
    """Ask ``libcuda`` for its CUDA version (``cuDriverGetVersion``) and device count."""
    try:
        lib = ctypes.CDLL(library)
        lib.cuInit, lib.cuDriverGetVersion, lib.cuDeviceGetCount  # noqa: B018
    except OSError:
        return DriverCheck(library="")
    except AttributeError as e:
        return DriverCheck(library=library, error=f"not a CUDA driver library ({e})")
    version = ctypes.c_int(0)
    cuda_version = ""
    if lib.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value:
        cuda_version = f"{version.value // 1000}.{version.value % 1000 // 10}"
    code = lib.cuInit(0)
    if code != 0:
        reason = f"cuInit error {code}: {_CU_ERRORS.get(code, 'see CUDA driver API errors')}"
        return DriverCheck(library=library, cuda_version=cuda_version, error=reason)
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return DriverCheck(library=library, cuda_version=cuda_version, error="cuDeviceGetCount")
    return DriverCheck(library=library, cuda_version=cuda_version, devices=count.value)


@dataclass(frozen=True, kw_only=True)
class GpuStack:
    """The ONNX Runtime build, its GPU providers and the driver, checked together."""

    build: OrtBuild
    providers: dict[str, ProviderCheck] = field(default_factory=dict)
    driver: DriverCheck = field(default_factory=lambda: DriverCheck(library=""))

    def provider_problem(self, provider: str) -> str:
        """``""`` when ``provider`` can run a session here, else the reasons, on one line."""
        check = self.providers[provider]
        reasons = [self.build.problem, check.problem]
        if check.library:  # the driver matters only for a provider this build has
            reasons.append(self.driver.problem(check.cuda_major))
        return "; ".join(dict.fromkeys(r for r in reasons if r))

    def usable(self) -> list[str]:
        """The providers a session can get here, best first (CPU always, once ORT imports)."""
        gpu = [p for p in self.providers if not self.provider_problem(p)]
        return [*gpu, CPU] if not self.build.error else []

    def device_problem(self, device: str) -> str:
        """``""`` when ``--device DEVICE`` works here, else why not, on one line."""
        if self.build.problem:
            return self.build.problem
        if device != "gpu" or any(not self.provider_problem(p) for p in self.providers):
            return ""
        checks = list(self.providers.values())
        reasons = []
        if not any(c.library for c in checks):
            reasons.append(
                f"{self.build.package} {self.build.version} has no CUDA or TensorRT provider "
                "(a CPU build): install raypipe[gpu] (onnxruntime-gpu) instead of raypipe[cpu]"
            )
        majors = [c.cuda_major for c in checks if c.cuda_major]
        reasons.append(self.driver.problem(max(majors) if majors else None))
        reasons += [f"{SHORT_NAMES[c.provider]}: {c.reason}" for c in checks if c.library]
        return "; ".join(r for r in reasons if r)

    def why_not(self, granted: Sequence[str]) -> list[str]:
        """For each GPU provider better than the best of ``granted``: why it was not used."""
        best = granted[0] if granted else CPU
        notes = []
        for provider in (TENSORRT, CUDA):
            if provider == best:
                break
            reason = self.provider_problem(provider) if provider in self.providers else ""
            notes.append(
                f"{provider} not used: "
                + (
                    reason
                    or "its libraries load here; see the actor's log for ONNX Runtime's error"
                )
            )
        return notes


def provider_notes(
    device: str, granted: Sequence[str], setup_notes: Sequence[str] = (), *, has_gpu: bool
) -> list[str]:
    """Why an inference actor's session runs on ``granted[0]`` and not on a better provider,
    for the run stats: ``[]`` when it got TensorRT (or a simulated model). ``setup_notes``:
    what the actor's provider setup said (e.g. an engine build that failed)."""
    best = granted[0] if granted else CPU
    if best == TENSORRT or best not in SHORT_NAMES:
        return list(setup_notes)
    if device == "cpu":
        return ["device 'cpu' asked for: CPU provider only", *setup_notes]
    notes = [] if has_gpu else ["this actor has no GPU (Ray assigned it none)"]
    return [*notes, *check_gpu_stack().why_not(granted), *setup_notes]


def check_gpu_stack(*, capi_dir: str | None = None, dirs: Sequence[str] | None = None) -> GpuStack:
    """:class:`GpuStack` for this process (``capi_dir``/``dirs``: see :func:`check_provider`)."""
    build = ort_build()
    providers = {
        p: check_provider(p, capi_dir=capi_dir, dirs=dirs, build=build) for p in PROVIDER_LIBRARIES
    }
    return GpuStack(build=build, providers=providers, driver=check_driver())
