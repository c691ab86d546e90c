"""The one session factory of an inference actor, for ``--model`` and for processors.

:class:`SessionSettings` holds what every session of an actor shares: the run's device
(``auto``/``cpu``/``gpu``), whether the actor holds a GPU, precision, engine cache, batch
size, CPU threads and the actor's GPU memory budget. :meth:`SessionSettings.provider_setup`
gives the providers and options for one model: on a GPU actor TensorRT with an engine from
the shared cache (:func:`raypipe.infer.trt.providers.prepare_gpu_providers`, which needs the frame
size for its shape profile), else CUDA; on CPU the CPU provider.
:func:`raypipe.infer.session.create_session` then builds it, reads back the providers ONNX
Runtime granted and fails loudly when ``gpu`` was asked for and the CPU was granted.

Inside a Ray actor ``CUDA_VISIBLE_DEVICES`` holds the actor's GPU only: every session uses
``device_id=0``, which is that GPU. :func:`session_record` says what a session was built
with, for the run's stats.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from raypipe.errors import ConfigError
from raypipe.infer.session import (
    CPU,
    CUDA,
    TENSORRT,
    granted_providers,
    import_onnxruntime,
    provider_order,
)
from raypipe.infer.trt.options import cuda_options
from raypipe.infer.trt.providers import ProviderSetup, prepare_gpu_providers


def input_name_of(model_bytes: bytes) -> str:
    """The name of the model's first graph input that is not an initializer."""
    import onnx

    graph = onnx.load_from_string(model_bytes).graph
    initializers = {t.name for t in graph.initializer}
    return next(i.name for i in graph.input if i.name not in initializers)


@dataclass(frozen=True, kw_only=True)
class SessionSettings:
    """What every ONNX Runtime session of one inference actor shares."""

    device: str = "auto"  # the run's: auto, cpu or gpu
    on_gpu: bool = False  # Ray gave this actor a GPU (CUDA_VISIBLE_DEVICES holds it)
    precision: str = "fp32"
    engine_cache: str | None = None
    batch_size: int = 8  # frames per model call: the TensorRT profile's largest batch
    intra_op_threads: int | None = None
    gpu_mem_limit_bytes: int | None = None  # the actor's share of its GPU (workers_per_gpu)

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")

    @property
    def uses_gpu(self) -> bool:
        """Whether sessions try GPU providers (the actor holds a GPU, device is not cpu)."""
        return self.on_gpu and self.device != "cpu"

    @property
    def device_name(self) -> str:
        """``cuda:0`` on a GPU actor (device 0 is the actor's GPU), else ``cpu``."""
        return "cuda:0" if self.uses_gpu else "cpu"

    def provider_setup(
        self,
        model_bytes: bytes,
        *,
        input_size: tuple[int, int] | None = None,
        layout: str = "NCHW",
        batch_size: int | None = None,
        precision: str | None = None,
    ) -> ProviderSetup:
        """Providers and options for ``model_bytes`` (see the module docstring).

        ``input_size`` (height, width) px is the size the model will see; TensorRT needs
        it for its shape profile and is skipped (CUDA, saying so) without it.
        """
        if self.device == "cpu":
            return ProviderSetup(providers=[CPU])
        if not self.on_gpu:
            return ProviderSetup()  # the default order: what this machine offers
        if input_size is None:
            return self._cuda_only()
        return prepare_gpu_providers(
            model_bytes,
            hashlib.sha256(model_bytes).hexdigest(),
            device=self.device,
            input_name=input_name_of(model_bytes),
            batch_size=batch_size or self.batch_size,
            height=input_size[0],
            width=input_size[1],
            layout=layout,
            precision=precision or self.precision,
            engine_cache=self.engine_cache,
            gpu_mem_limit_bytes=self.gpu_mem_limit_bytes,
        )

    def _cuda_only(self) -> ProviderSetup:
        available = import_onnxruntime().get_available_providers()
        if CUDA not in available:
            return ProviderSetup(notes=[f"onnxruntime offers only {available}: no GPU provider"])
        setup = ProviderSetup(
            providers=[CUDA] if self.device == "gpu" else [CUDA, CPU],
            provider_options={CUDA: cuda_options(gpu_mem_limit_bytes=self.gpu_mem_limit_bytes)},
        )
        if TENSORRT in available:
            setup.notes.append("TensorRT skipped: no input_size for its shape profile; CUDA")
        return setup


def session_record(
    label: str, setup: ProviderSetup, session: Any, device: str = "auto"
) -> dict[str, Any]:
    """What one session was built with and runs on, for the stats: the model, the providers
    asked for (``setup``'s, else the order ``device`` asks for: on the CPU, where the setup
    leaves the order to the session, "asked" was empty) and granted, the device id they
    were given and the actor's visible GPUs."""
    granted = granted_providers(session)
    asked = setup.providers
    if asked is None:
        asked = provider_order(device, list(import_onnxruntime().get_available_providers()))
    device_id = None
    for provider in (TENSORRT, CUDA):
        if provider in setup.provider_options:
            device_id = int(setup.provider_options[provider].get("device_id", 0))
    if device_id is None and granted[0] != CPU:
        device_id = 0  # raypipe's default provider options
    return {
        "model": label,
        "asked": list(asked),
        "granted": granted,
        "device_id": device_id,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "notes": list(setup.notes),
    }
