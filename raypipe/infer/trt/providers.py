"""Provider setup for an inference actor on a GPU: TensorRT with a shared engine cache,
else CUDA, with a per-actor memory budget.

Called once per actor, inside it (Ray has set ``CUDA_VISIBLE_DEVICES``: device 0 is the
actor's GPU). With TensorRT available the engine for (model, GPU, versions, precision,
shape profile) comes from :class:`raypipe.infer.trt.cache.EngineCache`: built once per
key across the cluster, copied to local disk, and handed to the TensorRT provider as its
engine cache directory, so the actor's warm-up batch loads an engine instead of building
one. Without TensorRT (or when its build fails and the device is ``auto``) the CUDA
provider is used. On a machine without CUDA this returns CPU settings and says why.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from raypipe.errors import DeviceUnavailableError, RaypipeError
from raypipe.infer.libraries import preload_gpu_libraries
from raypipe.infer.session import CPU, CUDA, TENSORRT, import_onnxruntime
from raypipe.infer.trt.options import cuda_options, profile_shapes, tensorrt_options

log = logging.getLogger("raypipe.infer")


@dataclass
class ProviderSetup:
    """What :func:`raypipe.infer.session.create_session` gets, and why."""

    providers: list[str] | None = None  # None: the default order
    provider_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    engine_dir: str = ""
    notes: list[str] = field(default_factory=list)


def prepare_gpu_providers(
    model_bytes: bytes,
    model_sha256: str,
    *,
    device: str,
    input_name: str,
    batch_size: int,
    height: int,
    width: int,
    layout: str = "NCHW",
    precision: str = "fp32",
    engine_cache: str | None = None,
    gpu_mem_limit_bytes: int | None = None,
) -> ProviderSetup:
    """Provider settings for this actor's GPU (see the module docstring).

    ``engine_cache``: fsspec URL of the shared cache; ``None`` keeps engines in a local
    temporary directory (built once per actor). Raises :class:`DeviceUnavailableError` only
    when ``device`` is ``gpu`` and nothing GPU-capable works.
    """
    setup = ProviderSetup()
    if device == "cpu":
        setup.providers = [CPU]
        return setup
    ort = import_onnxruntime()
    preload_gpu_libraries()
    available = ort.get_available_providers()
    if CUDA not in available and TENSORRT not in available:
        setup.notes.append(f"onnxruntime offers only {available}: no GPU provider")
        return setup
    setup.provider_options[CUDA] = cuda_options(gpu_mem_limit_bytes=gpu_mem_limit_bytes)
    if TENSORRT not in available:
        setup.providers = [CUDA] if device == "gpu" else [CUDA, CPU]
        setup.notes.append("TensorRT provider not available: CUDA")
        return setup
    profile = profile_shapes(input_name, batch_size, height, width, layout)
    try:
        setup.engine_dir = _engine_dir(model_bytes, model_sha256, precision, profile, engine_cache)
    except RaypipeError as e:
        if device == "gpu" and not isinstance(e, DeviceUnavailableError):
            raise
        log.warning("TensorRT engine unavailable (%s); using the CUDA provider", e)
        setup.providers = [CUDA] if device == "gpu" else [CUDA, CPU]
        setup.notes.append(f"TensorRT engine unavailable: {e}")
        return setup
    setup.provider_options[TENSORRT] = tensorrt_options(setup.engine_dir, precision, profile)
    return setup


def engine_cache_url(engine_cache: str | None) -> str:
    """The engine cache an actor uses: ``engine_cache`` (``--engine-cache``, else
    ``RAYPIPE_ENGINE_CACHE``), or a local temporary directory when neither is set."""
    return engine_cache or os.path.join(tempfile.gettempdir(), "raypipe-engines")


def _engine_dir(
    model_bytes: bytes,
    model_sha256: str,
    precision: str,
    profile: tuple[str, str, str],
    engine_cache: str | None,
) -> str:
    from raypipe.infer.trt.cache import EngineCache
    from raypipe.infer.trt.key import engine_key_for, tensorrt_builder

    key = engine_key_for(model_sha256, precision=precision, profile=profile)
    url = engine_cache_url(engine_cache)
    builder = tensorrt_builder(model_bytes, precision=precision, profile=profile)
    return EngineCache(url).ensure(key, builder)
