"""ONNX Runtime sessions: which execution providers, in which order, and what was granted.

Providers are tried in the order TensorRT -> CUDA -> CPU, filtered by what the installed
``onnxruntime`` offers. ONNX Runtime falls back to CPU *silently* when a GPU provider
cannot start (missing CUDA/cuDNN libraries, no visible GPU); :func:`create_session` reads
the granted providers back, logs them on the ``raypipe.infer`` logger and raises
:class:`~raypipe.errors.DeviceUnavailableError` when ``device="gpu"`` was asked for and the
session runs on CPU. ONNX Runtime's own retry-on-CPU (which prints to stdout) is turned
off; raypipe retries itself, and only for ``device="auto"`` does that end on CPU.

Inside a Ray actor ``CUDA_VISIBLE_DEVICES`` holds the actor's GPU only, so GPU providers
always get ``device_id=0``.

GPU provider options are built by :func:`tensorrt_options` (FP16, engine and timing cache,
explicit min/opt/max shape profiles from :func:`profile_shapes`, builder optimisation level,
workspace) and :func:`cuda_options` (cuDNN algorithm search, arena and memory limit), and
passed as ``create_session(..., provider_options={TENSORRT: ..., CUDA: ...})``.
:class:`IOBindingRunner` keeps persistent device buffers per input shape so a batch is
copied to the GPU once and the output comes back once, with no copy inside ``run``.

``onnxruntime`` is imported lazily: ``import raypipe.infer`` works without it, and the
first session says which extra to install.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from raypipe.config import DEVICES
from raypipe.errors import ConfigError, DeviceUnavailableError, ModelLoadError

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
    options.log_severity_level = 3  # errors only
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
        raise ModelLoadError(f"ONNX Runtime cannot load the model: {error}") from error
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


# --- GPU provider options -----------------------------------------------------------------

PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
CUDNN_CONV_ALGO_SEARCHES: tuple[str, ...] = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
ARENA_EXTEND_STRATEGIES: tuple[str, ...] = ("kNextPowerOfTwo", "kSameAsRequested")
_SHAPES = re.compile(r"^[^:,]+:\d+(x\d+)*$")


def _int_at_least(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def profile_shapes(
    input_name: str, batch_size: int, height: int, width: int, layout: str = "NCHW"
) -> tuple[str, str, str]:
    """TensorRT (min, opt, max) shape strings for one image input, as the EP options take them.

    Batch runs from 1 (a chunk's last, short batch) to ``batch_size``, which is also the
    shape TensorRT tunes for; height and width (pixels) are fixed to the video's frame size.
    ``profile_shapes("input", 8, 1080, 1920)`` gives ``("input:1x3x1080x1920",
    "input:8x3x1080x1920", "input:8x3x1080x1920")``.
    """
    if not isinstance(input_name, str) or not input_name or any(c in input_name for c in ":,"):
        raise ConfigError(
            f"input_name must be a tensor name without ':' or ',', got {input_name!r}"
        )
    _int_at_least("batch_size", batch_size, 1)
    _int_at_least("height", height, 1)
    _int_at_least("width", width, 1)
    if layout not in ("NCHW", "NHWC"):
        raise ConfigError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")

    def shape(batch: int) -> str:
        dims = (batch, 3, height, width) if layout == "NCHW" else (batch, height, width, 3)
        return f"{input_name}:{'x'.join(str(d) for d in dims)}"

    return shape(1), shape(batch_size), shape(batch_size)


def parse_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """``"input:1x3x8x8,mask:1x8"`` -> ``{"input": (1, 3, 8, 8), "mask": (1, 8)}``."""
    shapes = {}
    for part in text.split(","):
        if not _SHAPES.match(part):
            raise ConfigError(
                f"a TensorRT profile must look like 'input:1x3x1080x1920[,other:...]', got {text!r}"
            )
        name, dims = part.split(":")
        shapes[name] = tuple(int(d) for d in dims.split("x"))
    return shapes


def check_profile(profile: Sequence[str]) -> tuple[str, str, str]:
    """``profile`` as a (min, opt, max) tuple once it is well formed; ConfigError otherwise.

    Each string names the same inputs with the same rank, and min <= opt <= max per dimension.
    """
    if isinstance(profile, str) or len(profile) != 3:
        raise ConfigError(
            f"a TensorRT profile is three shape strings (min, opt, max), got {profile!r}"
        )
    low, opt, high = (parse_shapes(p) for p in profile)
    if not (low.keys() == opt.keys() == high.keys()):
        raise ConfigError(f"min, opt and max shapes must name the same inputs, got {profile!r}")
    for name in low:
        a, b, c = low[name], opt[name], high[name]
        if not (len(a) == len(b) == len(c)) or not all(x <= y <= z for x, y, z in zip(a, b, c)):
            raise ConfigError(
                f"input {name!r}: expected min <= opt <= max in every dimension and one rank, "
                f"got {a}, {b}, {c}"
            )
    return profile[0], profile[1], profile[2]


def tensorrt_options(
    cache_dir: str,
    precision: str,
    profile: Sequence[str] | None,
    builder_optimization_level: int = 3,
    workspace_bytes: int = 2 << 30,
    *,
    device_id: int = 0,
) -> dict[str, Any]:
    """TensorRT EP options: engine and timing cache in ``cache_dir``, FP16 for ``"fp16"``.

    ``profile`` (from :func:`profile_shapes`) fixes the optimisation profile, so an engine
    is built once, at session creation, and a cached engine is reused as long as the same
    profile is asked for; ``None`` lets the EP derive one from the first inputs (and rebuild
    when a later input falls outside it). ``builder_optimization_level``: 0-5, TensorRT's
    default 3 (lower builds faster, runs slower). ``workspace_bytes``: TensorRT's scratch
    memory limit (``set_memory_pool_limit`` under the hood; 1-4 GiB is typical).
    ``cache_dir`` must be a local directory (see :class:`raypipe.infer.engine_cache.EngineCache`).
    """
    if not isinstance(cache_dir, str) or not cache_dir:
        raise ConfigError(f"cache_dir must be a local directory path, got {cache_dir!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
    level = _int_at_least("builder_optimization_level", builder_optimization_level, 0)
    if level > 5:
        raise ConfigError(f"builder_optimization_level must be within 0..5, got {level}")
    options: dict[str, Any] = {
        "device_id": _int_at_least("device_id", device_id, 0),
        "trt_fp16_enable": precision == "fp16",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache_dir,
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": cache_dir,
        "trt_builder_optimization_level": level,
        "trt_max_workspace_size": _int_at_least("workspace_bytes", workspace_bytes, 1),
    }
    if profile is not None:
        low, opt, high = check_profile(profile)
        options.update(
            trt_profile_min_shapes=low, trt_profile_opt_shapes=opt, trt_profile_max_shapes=high
        )
    return options


def cuda_options(
    device_id: int = 0,
    *,
    cudnn_conv_algo_search: str = "EXHAUSTIVE",
    gpu_mem_limit_bytes: int | None = None,
    arena_extend_strategy: str = "kSameAsRequested",
    do_copy_in_default_stream: bool = True,
) -> dict[str, Any]:
    """CUDA EP options.

    ``cudnn_conv_algo_search``: ``EXHAUSTIVE`` benchmarks every cuDNN algorithm once per
    input shape (best for video, whose frame size never changes; costs time and memory on the
    first batch), ``HEURISTIC`` picks from cuDNN's heuristics (fast start), ``DEFAULT`` takes
    the default algorithm. ``gpu_mem_limit_bytes`` caps the CUDA EP's memory arena (the
    per-actor budget when several actors share a GPU; ``None`` = no cap); it does not cover
    TensorRT's own memory (``trt_max_workspace_size`` and the engine). ``arena_extend_strategy``
    ``kSameAsRequested`` grows the arena by what is asked for, not to the next power of two,
    which keeps a budget tight.
    """
    if cudnn_conv_algo_search not in CUDNN_CONV_ALGO_SEARCHES:
        raise ConfigError(
            f"cudnn_conv_algo_search must be one of {', '.join(CUDNN_CONV_ALGO_SEARCHES)}, "
            f"got {cudnn_conv_algo_search!r}"
        )
    if arena_extend_strategy not in ARENA_EXTEND_STRATEGIES:
        raise ConfigError(
            f"arena_extend_strategy must be one of {', '.join(ARENA_EXTEND_STRATEGIES)}, "
            f"got {arena_extend_strategy!r}"
        )
    options: dict[str, Any] = {
        "device_id": _int_at_least("device_id", device_id, 0),
        "cudnn_conv_algo_search": cudnn_conv_algo_search,
        "arena_extend_strategy": arena_extend_strategy,
        "do_copy_in_default_stream": bool(do_copy_in_default_stream),
    }
    if gpu_mem_limit_bytes is not None:
        options["gpu_mem_limit"] = _int_at_least("gpu_mem_limit_bytes", gpu_mem_limit_bytes, 1)
    return options


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


# --- IO binding ---------------------------------------------------------------------------


@dataclass
class _Slot:
    binding: Any  # onnxruntime.IOBinding
    input: Any  # onnxruntime.OrtValue on the device
    output: Any = None  # onnxruntime.OrtValue on the device, once the output shape is known


class IOBindingRunner:
    """Runs one input -> one output through ``session`` with persistent bound buffers.

    ``bind="auto"`` binds device (``cuda``) memory when the session's first granted provider
    is TensorRT or CUDA and otherwise calls ``session.run`` as it is. ``"cuda"`` or ``"cpu"``
    force binding on that device (``"cpu"`` exercises the same code on any machine).

    Per input shape and dtype the runner keeps one input OrtValue (written with
    ``update_inplace``, one host-to-device copy) and, after the first run has told it the
    output shape, one output OrtValue ORT writes into; only ``max_shapes`` shapes are kept
    (least recently used dropped). A video has one frame size and at most two batch sizes
    (full, and its last short batch). Calls are serialised by a lock.
    """

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        input_name: str,
        output_name: str,
        *,
        bind: str = "auto",
        device_id: int = 0,
        max_shapes: int = 4,
    ) -> None:
        if bind not in ("auto", "cuda", "cpu", "off"):
            raise ConfigError(f"bind must be 'auto', 'cuda', 'cpu' or 'off', got {bind!r}")
        if bind == "auto":
            bind = "cuda" if granted_providers(session)[0] in GPU_PROVIDERS else "off"
        self.session = session
        self.input_name = input_name
        self.output_name = output_name
        self.device: str | None = None if bind == "off" else bind
        self.device_id = _int_at_least("device_id", device_id, 0)
        self.max_shapes = _int_at_least("max_shapes", max_shapes, 1)
        self._slots: OrderedDict[tuple[tuple[int, ...], str], _Slot] = OrderedDict()
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The model's output for ``batch`` as a new host array (never a view of a buffer)."""
        if self.device is None:
            (out,) = self.session.run([self.output_name], {self.input_name: batch})
            return np.asarray(out)
        batch = np.ascontiguousarray(batch)
        with self._lock:
            slot = self._slot(batch)
            self.session.run_with_iobinding(slot.binding)
            slot.binding.synchronize_outputs()
            (out,) = slot.binding.copy_outputs_to_cpu()
            if slot.output is None:
                # First run for this shape: ORT allocated the output; from now on it writes
                # into a buffer of that shape, bound once.
                ort = import_onnxruntime()
                slot.output = ort.OrtValue.ortvalue_from_shape_and_type(
                    out.shape, out.dtype, self.device, self.device_id
                )
                slot.binding.bind_ortvalue_output(self.output_name, slot.output)
            # On the CPU the array may view the bound buffer, which the next run overwrites.
            return np.array(out, copy=True) if self.device == "cpu" else np.asarray(out)

    def _slot(self, batch: np.ndarray) -> _Slot:
        key = (tuple(batch.shape), batch.dtype.str)
        slot = self._slots.get(key)
        if slot is not None:
            self._slots.move_to_end(key)
            slot.input.update_inplace(batch)
            return slot
        ort = import_onnxruntime()
        assert self.device is not None
        # On "cpu" an OrtValue from numpy would wrap the caller's array: copy it.
        source = batch.copy() if self.device == "cpu" else batch
        value = ort.OrtValue.ortvalue_from_numpy(source, self.device, self.device_id)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, value)
        binding.bind_output(self.output_name, self.device, self.device_id)
        slot = _Slot(binding=binding, input=value)
        self._slots[key] = slot
        while len(self._slots) > self.max_shapes:
            self._slots.popitem(last=False)
        return slot

    @property
    def shapes(self) -> list[tuple[tuple[int, ...], str]]:
        """The (shape, dtype) keys of the buffers held, least recently used first."""
        return list(self._slots)


def run_with_iobinding(
    session: onnxruntime.InferenceSession, input_name: str, output_name: str, batch: np.ndarray
) -> np.ndarray:
    """``session``'s output for ``batch``: bound device buffers on CUDA/TensorRT, else ``run``.

    Keeps one :class:`IOBindingRunner` per session and tensor pair (on the session object),
    so repeated calls reuse the same device buffers.
    """
    runners: dict[tuple[str, str], IOBindingRunner] = session.__dict__.setdefault(
        "_raypipe_iobinding_runners", {}
    )
    runner = runners.get((input_name, output_name))
    if runner is None:
        runner = runners[(input_name, output_name)] = IOBindingRunner(
            session, input_name, output_name
        )
    return runner.run(batch)
