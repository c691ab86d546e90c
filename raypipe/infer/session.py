"""ONNX Runtime sessions: which execution providers, in which order, and what was granted.

Providers are tried in the order TensorRT -> CUDA -> CPU, filtered by what the installed
``onnxruntime`` offers. ONNX Runtime falls back to CPU *silently* when a GPU provider
cannot start (missing CUDA/cuDNN libraries, no visible GPU); :func:`create_session` reads
the granted providers back, logs them on the ``raypipe.infer`` logger and raises
:class:`~raypipe.errors.DeviceUnavailableError` when ``device="gpu"`` was asked for and the
session runs on CPU. ONNX Runtime's own retry-on-CPU (which prints to stdout) is turned
off; raypipe retries itself, and only for ``device="auto"`` does that end on CPU.

Before the first GPU session, :func:`raypipe.infer.libraries.preload_gpu_libraries` loads the
CUDA/cuDNN/TensorRT libraries pip installed outside the loader's path (``raypipe[gpu]``), so
ONNX Runtime's CUDA and TensorRT providers find them.

Inside a Ray actor ``CUDA_VISIBLE_DEVICES`` holds the actor's GPU only, so GPU providers
always get ``device_id=0``.

GPU provider options come from :mod:`raypipe.infer.trt.options` (``tensorrt_options``,
``cuda_options``, shape profiles) and are passed as
``create_session(..., provider_options={TENSORRT: ..., CUDA: ...})``.
:class:`raypipe.infer.iobinding.IOBindingRunner` runs the models: ``session.run`` by
default (measured faster on a GPU than persistent bound buffers), bound buffers on request.

``onnxruntime`` is imported lazily: ``import raypipe.infer`` works without it, and the
first session says which extra to install.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from raypipe.config import DEVICES
from raypipe.errors import ConfigError, DeviceUnavailableError, ModelLoadError
from raypipe.infer.libraries import preload_gpu_libraries

if TYPE_CHECKING:
    import onnxruntime

logger = logging.getLogger("raypipe.infer")

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_PROVIDERS: tuple[str, ...] = (TENSORRT, CUDA)

DEFAULT_PROVIDER_OPTIONS: dict[str, dict[str, Any]] = {
    TENSORRT: {"device_id": 0, "trt_fp16_enable": False},
    CUDA: {"device_id": 0},
    CPU: {},
}


def import_onnxruntime() -> ModuleType:
    """``onnxruntime``, or a :class:`DeviceUnavailableError` saying which extra to install."""
    try:
        import onnxruntime
    except ImportError as e:
        raise DeviceUnavailableError(
            f"onnxruntime cannot be imported ({e}); install it with "
            "pip install 'raypipe[cpu]' (CPU) or pip install 'raypipe[gpu]' (onnxruntime-gpu)"
        ) from e
    module: ModuleType = onnxruntime
    return module


def provider_order(device: str, available: list[str]) -> list[str]:
    """The providers to ask ONNX Runtime for, best first, for ``device`` (auto, cpu, gpu).

    ``available`` is what ``onnxruntime.get_available_providers()`` lists. ``cpu`` gives the
    CPU provider only; ``gpu`` gives the available GPU providers (TensorRT, then CUDA) and
    raises :class:`DeviceUnavailableError` when there is none; ``auto`` gives every available
    GPU provider and then CPU.
    """
    if device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return [CPU]
    gpu = [p for p in GPU_PROVIDERS if p in available]
    if device == "gpu":
        if not gpu:
            raise DeviceUnavailableError(
                f"device 'gpu' asked for but this onnxruntime offers only {list(available)}; "
                "install raypipe[gpu] (onnxruntime-gpu) or pass --device cpu/auto"
            )
        return gpu
    return [*gpu, CPU]


def _attempts(device: str, order: list[str]) -> list[list[str]]:
    """Provider lists to try in turn: without TensorRT if it fails, then CPU for ``auto``."""
    attempts = [order]
    if TENSORRT in order and CUDA in order:
        attempts.append([p for p in order if p != TENSORRT])
    if device == "auto" and order != [CPU]:
        attempts.append([CPU])
    return attempts


def _session_options(ort: ModuleType, intra_op_threads: int | None) -> Any:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Fatal only: run-time errors are raised as exceptions (and become one typed line), so
    # ONNX Runtime's own copy of them on stderr would only add noise to that line.
    options.log_severity_level = 4
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    return options


def _new_session(
    ort: ModuleType,
    model_bytes: bytes,
    options: Any,
    providers: list[str],
    provider_options: Mapping[str, Mapping[str, Any]],
) -> onnxruntime.InferenceSession:
    with_options = [
        (p, {**DEFAULT_PROVIDER_OPTIONS[p], **provider_options.get(p, {})}) for p in providers
    ]
    # enable_fallback=0: ONNX Runtime would otherwise print "EP Error" to stdout and retry
    # on CPU by itself, at creation and again at run time.
    return ort.InferenceSession(
        model_bytes, sess_options=options, providers=with_options, enable_fallback=0
    )


def create_session(
    model_bytes: bytes,
    *,
    device: str = "auto",
    intra_op_threads: int | None = None,
    provider_options: dict[str, dict[str, Any]] | None = None,
    providers: Sequence[str] | None = None,
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session for ``model_bytes`` on ``device`` (auto, cpu or gpu).

    ``provider_options`` maps a provider name to options merged over raypipe's defaults
    (:data:`DEFAULT_PROVIDER_OPTIONS`), e.g. ``{TENSORRT: tensorrt_options(...), CUDA:
    cuda_options(...)}``. ``providers`` keeps only these of :func:`provider_order`'s list
    (``[CUDA]`` to benchmark CUDA without TensorRT). Raises :class:`ModelLoadError` when
    ONNX Runtime cannot load the model and :class:`DeviceUnavailableError` when
    ``device="gpu"`` and no GPU provider was granted.
    """
    if intra_op_threads is not None and (
        not isinstance(intra_op_threads, int) or intra_op_threads < 1
    ):
        raise ConfigError(
            f"intra_op_threads must be an integer >= 1 or None, got {intra_op_threads!r}"
        )
    ort = import_onnxruntime()
    extra = provider_options or {}
    unknown = sorted(set(extra) - set(DEFAULT_PROVIDER_OPTIONS))
    if unknown:
        raise ConfigError(
            f"provider_options names unknown providers {unknown}; "
            f"expected some of {list(DEFAULT_PROVIDER_OPTIONS)}"
        )
    if device != "cpu":  # before asking for providers: ORT 1.31 registers CUDA when it loads
        preload_gpu_libraries()
    order = provider_order(device, list(ort.get_available_providers()))
    if providers is not None:
        order = _restrict(order, providers, device)
    options = _session_options(ort, intra_op_threads)
    session = None
    error: Exception | None = None
    attempts = _attempts(device, order)
    for i, providers in enumerate(attempts):
        try:
            session = _new_session(ort, model_bytes, options, providers, extra)
            break
        except Exception as e:  # ORT raises its own pybind exception types
            error = e
            if i + 1 < len(attempts):
                logger.warning(
                    "ONNX Runtime could not create a session with %s (%s); trying %s",
                    providers,
                    e,
                    attempts[i + 1],
                )
    if session is None:
        assert error is not None
        if device == "gpu" and _loads_on_cpu(ort, model_bytes, options):
            raise DeviceUnavailableError(
                f"device 'gpu' asked for but ONNX Runtime could not start {order}: {error}; "
                "check the CUDA/cuDNN/TensorRT libraries onnxruntime-gpu needs and that a GPU "
                "is visible (CUDA_VISIBLE_DEVICES), or pass --device cpu/auto"
            ) from error
        raise ModelLoadError(
            f"ONNX Runtime cannot load the model: {error}{_load_hint(str(error), model_bytes)}"
        ) from error
    granted = granted_providers(session)
    logger.info("ONNX Runtime providers: asked for %s, granted %s", order, granted)
    if granted[0] == CPU and order[0] != CPU:
        if device == "gpu":
            raise DeviceUnavailableError(
                f"device 'gpu' asked for {order} but ONNX Runtime granted only {granted}; "
                "check the CUDA/cuDNN/TensorRT libraries onnxruntime-gpu needs (see the log) "
                "and that a GPU is visible (CUDA_VISIBLE_DEVICES), or pass --device cpu/auto"
            )
        logger.warning("device 'auto': GPU providers %s not granted, running on CPU", order[:-1])
    return session


def _restrict(order: list[str], providers: Sequence[str], device: str) -> list[str]:
    """``order`` without the providers not in ``providers``; raise when none is left."""
    unknown = sorted(set(providers) - set(DEFAULT_PROVIDER_OPTIONS))
    if isinstance(providers, str) or unknown:
        raise ConfigError(
            f"providers must be a list of some of {list(DEFAULT_PROVIDER_OPTIONS)}, "
            f"got {providers!r}"
        )
    kept = [p for p in order if p in providers]
    if not kept:
        raise DeviceUnavailableError(
            f"providers {list(providers)} asked for with device {device!r}, but only {order} "
            "can be used here; install raypipe[gpu] (onnxruntime-gpu) on a GPU machine, or ask "
            "for one of those"
        )
    return kept


def _loads_on_cpu(ort: ModuleType, model_bytes: bytes, options: Any) -> bool:
    """Whether the model loads on CPU: tells a GPU failure from a bad model."""
    try:
        _new_session(ort, model_bytes, options, [CPU], {})
    except Exception:
        return False
    return True


def granted_providers(session: onnxruntime.InferenceSession) -> list[str]:
    """The providers ``session`` really runs on, best first."""
    return list(session.get_providers())


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """Whether onnxruntime offers CUDA *and* the CUDA driver sees at least one GPU.

    Loads the driver library (``libcuda``) with ctypes and asks ``cuDeviceGetCount``; no
    ``nvidia-smi``. Never raises. This initialises the CUDA driver in the calling process
    (do not ``fork`` afterwards and use CUDA in the child). Cached for the process.
    """
    try:
        import onnxruntime

        preload_gpu_libraries()
        if CUDA not in onnxruntime.get_available_providers():
            return False
        return _cuda_device_count() > 0
    except Exception:
        return False


def _cuda_device_count() -> int:
    names = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if lib.cuInit(0) != 0:
            return 0
        count = ctypes.c_int(0)
        if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    return 0


@dataclass(frozen=True)
class CudaDevice:
    """What the CUDA driver says about one visible device (for engine cache keys)."""

    name: str
    compute_capability: str  # "8.9"
    driver_cuda_version: str  # the newest CUDA the driver supports, "12.4"


def cuda_device(device_id: int = 0) -> CudaDevice:
    """Name and compute capability of visible CUDA device ``device_id``, via ``libcuda``.

    Honours ``CUDA_VISIBLE_DEVICES`` (inside a Ray actor, device 0 is the actor's GPU).
    Raises :class:`DeviceUnavailableError` without a driver or a device.
    """
    names = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        device = ctypes.c_int(0)
        major, minor, version = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        buf = ctypes.create_string_buffer(256)
        # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
        if (
            lib.cuInit(0) == 0
            and lib.cuDeviceGet(ctypes.byref(device), device_id) == 0
            and lib.cuDeviceGetName(buf, 256, device) == 0
            and lib.cuDeviceGetAttribute(ctypes.byref(major), 75, device) == 0
            and lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, device) == 0
            and lib.cuDriverGetVersion(ctypes.byref(version)) == 0
        ):
            return CudaDevice(
                name=buf.value.decode(errors="replace"),
                compute_capability=f"{major.value}.{minor.value}",
                driver_cuda_version=f"{version.value // 1000}.{version.value % 1000 // 10}",
            )
        break
    raise DeviceUnavailableError(
        f"no CUDA device {device_id} visible (CUDA_VISIBLE_DEVICES, driver libcuda); run on a "
        "GPU machine with the NVIDIA driver installed"
    )


_NOT_ONNX = (  # (offset, bytes, what the file is, what to do)
    (4, b"ftyp", "an MP4/MOV video", ""),
    (0, b"\x1a\x45\xdf\xa3", "a Matroska/WebM video", ""),
    (0, b"RIFF", "an AVI video or WAV audio", ""),
    (0, b"\x89PNG", "a PNG image", ""),
    (0, b"\xff\xd8\xff", "a JPEG image", ""),
    (0, b"PK\x03\x04", "a zip archive", "a PyTorch .pt/.pth checkpoint is one: export the "
     "model with torch.onnx.export"),
    (0, b"\x89HDF", "an HDF5 file", "a Keras .h5 model: convert it with tf2onnx"),
    (0, b"\x80", "a Python pickle", "a PyTorch or scikit-learn model: export it to ONNX"),
)  # fmt: skip


def _load_hint(error: str, data: bytes = b"") -> str:
    """What to do about ONNX Runtime's load ``error``, where its words do not say."""
    if "INVALID_PROTOBUF" in error or "No graph was found" in error:
        for offset, magic, what, advice in _NOT_ONNX:
            if data[offset : offset + len(magic)] == magic:
                return f"; the file is {what}, not an ONNX model{f' ({advice})' if advice else ''}"
        if data and data[:1] != b"\x08":  # an ONNX file opens with its IR version (field 1)
            return (
                "; the file is not an ONNX model: pass builtin:NAME or a path/URL of an .onnx file"
            )
        return "; the file is not a whole ONNX model (cut off in a download?): fetch it again"
    if "is not a registered function/op" in error:
        return (
            "; it uses an operator from a custom-op library, which raypipe does not load: "
            "export the model with standard ONNX operators"
        )
    if "NOT_IMPLEMENTED" in error and data:
        return _input_type_hint(data)
    return ""


def _input_type_hint(data: bytes) -> str:
    """Where ONNX Runtime has no kernel for the model's operators at their types: what
    raypipe feeds, when the model's input is of another type (a float64 model failed on
    ONNX Runtime's missing double ``Conv``, where one it loads was told what to export;
    a sweep)."""
    from raypipe.infer.output_kind import ELEMENT_DTYPES, graph_io

    try:
        import onnx

        inputs, _ = graph_io(onnx.load_model_from_string(data).graph)
    except Exception:  # noqa: BLE001 - ONNX Runtime's own words stand
        return ""
    odd = [i for i in inputs if i.type not in ELEMENT_DTYPES]
    if not odd:
        return ""
    return (
        f"; its input {odd[0].name!r} has element type {odd[0].type}, and raypipe feeds "
        f"{', '.join(ELEMENT_DTYPES)}: export the model with a float32, float16 or uint8 "
        "input (and weights)"
    )
