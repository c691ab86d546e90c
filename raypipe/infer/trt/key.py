"""What a serialized TensorRT engine depends on (:class:`EngineKey`), this GPU's key, and a
``build`` function that makes TensorRT build and write an engine (GPU only).

One :class:`raypipe.infer.trt.cache.EngineCache` entry per key: an engine built for one
GPU, TensorRT, ORT or CUDA version, precision or shape profile is never handed to another.
This module imports neither ``ray`` nor ``onnxruntime`` at import time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from raypipe.errors import ConfigError, DeviceUnavailableError
from raypipe.infer.trt.options import PRECISIONS

FORMAT = "raypipe-engine-cache/1"
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, kw_only=True)
class EngineKey:
    """Everything a serialized TensorRT engine depends on; one cache entry per key.

    ``profile`` is the TensorRT shape profile as the EP options spell it, e.g.
    ``"input:1x3x1080x1920|input:8x3x1080x1920|input:8x3x1080x1920"`` (min|opt|max, see
    :func:`raypipe.infer.trt.options.profile_shapes`).
    """

    model_sha256: str
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    ort_version: str
    cuda_version: str
    precision: str
    profile: str

    def __post_init__(self) -> None:
        if not isinstance(self.model_sha256, str) or not SHA256_HEX.match(self.model_sha256):
            raise ConfigError(
                "model_sha256 must be 64 lowercase hex digits (hashlib.sha256(model).hexdigest()), "
                f"got {self.model_sha256!r}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be 'fp32' or 'fp16', got {self.precision!r}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(
                    f"EngineKey.{field.name} must be a non-empty string, got {value!r}"
                )

    def to_dict(self) -> dict[str, str]:
        """The key's fields by name (JSON-serialisable)."""
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A stable 64-hex-digit id of this key: sha256 of its canonical JSON."""
        canonical = json.dumps({"format": FORMAT, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


def tensorrt_version() -> str:
    """The TensorRT version ONNX Runtime's TensorRT EP loads (``libnvinfer``), e.g. "10.9.0".

    Asks the library itself (``getInferLibVersion``) and falls back to the installed
    ``tensorrt`` package's version. Raises :class:`DeviceUnavailableError` when neither exists.
    """
    import ctypes
    import importlib.metadata

    for name in ("libnvinfer.so.10", "libnvinfer.so"):
        try:
            number = int(ctypes.CDLL(name).getInferLibVersion())
        except (OSError, AttributeError):
            continue
        # TensorRT 10 encodes major*10000 + minor*100 + patch; 8.x used major*1000.
        major, rest = divmod(number, 10000 if number >= 100000 else 1000)
        return f"{major}.{rest // 100}.{rest % 100}"
    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu13-libs", "tensorrt-cu12",
                 "tensorrt-cu12-libs", "tensorrt-libs"):  # fmt: skip
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    raise DeviceUnavailableError(
        "TensorRT is not installed (no libnvinfer.so.10 and no tensorrt package); install "
        "raypipe[gpu] and put TensorRT's libraries on LD_LIBRARY_PATH, or use the CUDA provider"
    )


def engine_key_for(
    model_sha256: str, *, precision: str, profile: Sequence[str], device_id: int = 0
) -> EngineKey:
    """The :class:`EngineKey` of a model on this process's CUDA device ``device_id``.

    GPU name and compute capability come from the CUDA driver (device 0 is a Ray actor's own
    GPU), the CUDA version from the onnxruntime-gpu build (else the driver's), TensorRT's from
    :func:`tensorrt_version`. ``profile`` is (min, opt, max) from
    :func:`raypipe.infer.trt.options.profile_shapes`.
    """
    from raypipe.infer.session import cuda_device, import_onnxruntime
    from raypipe.infer.trt.options import check_profile

    device = cuda_device(device_id)
    ort = import_onnxruntime()
    try:
        from onnxruntime.capi import build_and_package_info as info

        cuda_version = str(getattr(info, "cuda_version", "") or device.driver_cuda_version)
    except ImportError:
        cuda_version = device.driver_cuda_version
    return EngineKey(
        model_sha256=model_sha256,
        gpu_name=device.name,
        compute_capability=device.compute_capability,
        tensorrt_version=tensorrt_version(),
        ort_version=str(ort.__version__),
        cuda_version=cuda_version,
        precision=precision,
        profile="|".join(check_profile(profile)),
    )


def tensorrt_builder(
    model_bytes: bytes,
    *,
    precision: str,
    profile: Sequence[str],
    builder_optimization_level: int = 3,
    workspace_bytes: int = 2 << 30,
) -> Callable[[str], None]:
    """A ``build`` function for :meth:`EngineCache.ensure` that makes TensorRT build engines.

    ``build(directory)`` creates a session with TensorRT (then CUDA) whose engine and timing
    cache is ``directory``, checks that TensorRT was granted, and runs one zero batch at the
    profile's min and opt shapes so every engine is built and written.
    """
    import numpy as np

    from raypipe.infer.session import CUDA, TENSORRT, create_session, granted_providers
    from raypipe.infer.trt.options import check_profile, parse_shapes, tensorrt_options

    low, opt, _ = check_profile(profile)
    dtypes = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}

    def build(directory: str) -> None:
        options = tensorrt_options(
            directory, precision, profile, builder_optimization_level, workspace_bytes
        )
        session = create_session(
            model_bytes,
            device="gpu",
            providers=[TENSORRT, CUDA],
            provider_options={TENSORRT: options},
        )
        if granted_providers(session)[0] != TENSORRT:
            raise DeviceUnavailableError(
                f"TensorRT was not granted (got {granted_providers(session)}); an engine cannot "
                "be built. Check TensorRT's libraries (libnvinfer.so.10) or use the CUDA provider"
            )
        inputs = {i.name: dtypes.get(i.type, np.float32) for i in session.get_inputs()}
        for shapes in (parse_shapes(low), parse_shapes(opt)):
            feeds = {name: np.zeros(shape, dtype=inputs[name]) for name, shape in shapes.items()}
            session.run(None, feeds)

    return build
