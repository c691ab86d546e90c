"""The inference actor: a thin class holding one warm ONNX Runtime session.

``__init__`` builds the session (Ray has already set ``CUDA_VISIBLE_DEVICES``, so device 0
is this actor's GPU; on a GPU the TensorRT engine comes from the shared engine cache, see
:mod:`raypipe.infer.gpu`) and runs one warm-up batch so the first chunk does not pay for
graph optimisation or an engine build, and notes why a better provider was not granted
(:func:`raypipe.infer.provider_check.provider_notes`: the facts ``raypipe doctor`` shows,
sent with each chunk into the run stats); ``__call__`` hands each chunk to
:class:`raypipe.infer.FrameModel` and records where it ran. An image model replaces the
row's frames; a tensor model (analysis) turns the chunk into a small Parquet table. A GPU
actor samples its card's utilisation with NVML and sends the samples with each chunk.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import numpy as np
import ray

from raypipe import faults
from raypipe.config import engine_cache_from_env
from raypipe.distributed.stages import EMPTY_FRAMES, error_fields, tensor_table_bytes
from raypipe.infer.models import FrameModel, ModelSpec
from raypipe.infer.provider_check import provider_notes
from raypipe.infer.simulated import SimulatedModel, is_simulated


def _profile_hw(spec: ModelSpec, model: FrameModel, hw: tuple[int, int]) -> tuple[int, int]:
    """The frame size the model really sees: the model's own size when frames are resized,
    the tile window when tiled, else the video's."""
    if model.model_size is not None:
        return model.model_size
    if spec.tile:
        side = spec.tile + 2 * spec.tile_overlap
        return min(side, hw[0]), min(side, hw[1])
    return hw


class InferActor:
    """Ray Data callable class: one chunk per call (``batch_size=1``, numpy batches)."""

    def __init__(
        self,
        model_bytes: bytes,
        *,
        model: str = "",
        spec: ModelSpec | None = None,
        device: str = "auto",
        batch_size: int = 8,
        intra_op_threads: int | None = None,
        warmup_hw: tuple[int, int] | None = None,
        precision: str = "fp32",
        engine_cache: str | None = None,
        gpu_memory_fraction: float = 1.0,
        tensor: bool = False,
    ) -> None:
        ctx = ray.get_runtime_context()
        self.actor_id = ctx.get_actor_id() or ""
        self.node_id = ctx.get_node_id()
        self.gpu_ids = [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])]
        self.cuda_visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        self.batch_size = batch_size
        self.tensor = tensor
        self.notes: list[str] = []
        self.monitor = self._start_monitor()
        self._sent = 0
        self.model: FrameModel | SimulatedModel
        spec = spec or ModelSpec()
        if is_simulated(model):
            self.model = SimulatedModel(model)
        else:
            self.model = self._load(
                model_bytes,
                spec,
                device,
                intra_op_threads,
                warmup_hw,
                precision,
                engine_cache,
                self._memory_budget(gpu_memory_fraction),
            )
        self.providers = self.model.providers
        self.provider_notes = json.dumps(
            provider_notes(device, self.providers, self.notes, has_gpu=bool(self.gpu_ids))
        )
        if warmup_hw is not None:
            self.model.warmup(warmup_hw[0], warmup_hw[1], min(batch_size, 2))

    def _load(
        self,
        model_bytes: bytes,
        spec: ModelSpec,
        device: str,
        intra_op_threads: int | None,
        warmup_hw: tuple[int, int] | None,
        precision: str,
        engine_cache: str | None,
        gpu_mem_limit_bytes: int | None,
    ) -> FrameModel:
        if device == "cpu" or not self.gpu_ids or warmup_hw is None:
            return FrameModel(
                model_bytes, spec=spec, device=device, intra_op_threads=intra_op_threads
            )
        from raypipe.distributed.engines import input_name_of
        from raypipe.infer.gpu import prepare_gpu_providers

        metadata = FrameModel(model_bytes, spec=spec, device="cpu")  # sizes only, no GPU yet
        height, width = _profile_hw(spec, metadata, warmup_hw)
        setup = prepare_gpu_providers(
            model_bytes,
            hashlib.sha256(model_bytes).hexdigest(),
            device=device,
            input_name=input_name_of(model_bytes),
            batch_size=self.batch_size,
            height=height,
            width=width,
            layout=spec.layout,
            precision=precision,
            engine_cache=engine_cache or engine_cache_from_env(),
            gpu_mem_limit_bytes=gpu_mem_limit_bytes,
        )
        self.notes.extend(setup.notes)
        return FrameModel(
            model_bytes,
            spec=spec,
            device=device,
            intra_op_threads=intra_op_threads,
            providers=setup.providers,
            provider_options=setup.provider_options,
        )

    def _start_monitor(self) -> Any:
        if not self.gpu_ids:
            return None
        from raypipe.distributed.gpu_monitor import GpuMonitor, actor_physical_gpu_indices

        try:
            monitor = GpuMonitor(gpu_indices=actor_physical_gpu_indices())
        except Exception as e:  # noqa: BLE001 - monitoring must never stop inference
            self.notes.append(f"GPU monitoring off: {e}")
            return None
        self.monitor_start = time.time()
        if monitor.available:
            monitor.start()
        return monitor

    def _memory_budget(self, fraction: float) -> int | None:
        """Bytes of GPU memory this actor may use when it shares its GPU (workers_per_gpu):
        Ray isolates nothing, so the CUDA provider's arena is capped at the actor's share."""
        if fraction >= 1.0 or self.monitor is None or not self.monitor.available:
            return None
        self.monitor.sample()
        total = self.monitor.samples[-1]["memory_total_bytes"]
        return int(total * fraction)

    def _gpu_samples(self) -> str:
        """New NVML samples since the last chunk, as JSON (``t`` unix s, ``gpu``, ``util``,
        ``mem_used``), or ``{"reason": ...}`` when this actor cannot sample."""
        if self.monitor is None:
            return ""
        if not self.monitor.available:
            return json.dumps({"reason": self.monitor.summary().get("reason", "")})
        samples = self.monitor.samples[self._sent :]
        self._sent += len(samples)
        return json.dumps(
            [
                {
                    "t": self.monitor_start + s["t_s"],
                    "gpu": s["gpu"],
                    "node": self.node_id,
                    "util": s["util_pct"],
                    "mem_used": s["memory_used_bytes"],
                }
                for s in samples
            ]
        )

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if len(batch["chunk_id"]) != 1:
            raise ValueError(f"InferActor takes one chunk per call, got {len(batch['chunk_id'])}")
        start = time.time()
        out = {k: v for k, v in batch.items() if k != "frames"}
        frames = np.asarray(batch["frames"][0])
        segment = b""
        if not batch["error_type"][0]:
            faults.checkpoint("infer", str(batch["chunk_id"][0]), node=self.node_id)
            try:
                if self.tensor:
                    row = {k: v[0] for k, v in batch.items() if k != "frames"}
                    outputs = self.model.run_tensors(frames, self.batch_size)  # type: ignore[union-attr]
                    segment = tensor_table_bytes(row, np.asarray(batch["pts"][0]), outputs)
                    frames = EMPTY_FRAMES
                else:
                    frames = self.model.run(frames, self.batch_size)
            except Exception as e:  # noqa: BLE001 - becomes the video's typed error row
                out.update({k: np.array([v]) for k, v in error_fields(e).items()})
                frames = EMPTY_FRAMES
        out.update(
            frames=frames[None],
            infer_node=np.array([self.node_id]),
            infer_pid=np.array([os.getpid()]),
            actor_id=np.array([self.actor_id]),
            gpu_ids=np.array([json.dumps(self.gpu_ids)]),
            cuda_visible_devices=np.array([self.cuda_visible_devices]),
            providers=np.array([json.dumps(self.providers)]),
            provider_notes=np.array([self.provider_notes]),
            gpu_samples=np.array([self._gpu_samples()]),
            infer_start=np.array([start]),
            infer_s=np.array([time.time() - start]),
        )
        if self.tensor:
            out.update(
                segment=np.array([segment], dtype=object),
                out_width=np.array([0]),
                out_height=np.array([0]),
            )
        return out
