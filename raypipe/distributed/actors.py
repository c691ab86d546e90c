"""The inference actor: a thin class holding one warm ONNX Runtime session.

``__init__`` builds the session (Ray has already set ``CUDA_VISIBLE_DEVICES``, so device 0
is this actor's GPU) and runs one warm-up batch so the first chunk does not pay for graph
optimisation or an engine build; ``__call__`` hands each chunk to
:meth:`raypipe.infer.FrameModel.run` and records where it ran.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import ray

from raypipe.distributed.stages import EMPTY_FRAMES, error_fields
from raypipe.infer.models import FrameModel, ModelSpec
from raypipe.infer.simulated import SimulatedModel, is_simulated
from raypipe.testing.faults import maybe_exit


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
    ) -> None:
        self.model: FrameModel | SimulatedModel
        if is_simulated(model):
            self.model = SimulatedModel(model)
        else:
            self.model = FrameModel(
                model_bytes,
                spec=spec or ModelSpec(),
                device=device,
                intra_op_threads=intra_op_threads,
            )
        self.batch_size = batch_size
        ctx = ray.get_runtime_context()
        self.actor_id = ctx.get_actor_id() or ""
        self.node_id = ctx.get_node_id()
        self.gpu_ids = [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])]
        self.cuda_visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        self.providers = self.model.providers
        if warmup_hw is not None:
            self.model.warmup(warmup_hw[0], warmup_hw[1], min(batch_size, 2))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if len(batch["chunk_id"]) != 1:
            raise ValueError(f"InferActor takes one chunk per call, got {len(batch['chunk_id'])}")
        start = time.time()
        out = {k: v for k, v in batch.items() if k != "frames"}
        frames = np.asarray(batch["frames"][0])
        if not batch["error_type"][0]:
            maybe_exit("infer", str(batch["chunk_id"][0]))
            try:
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
            infer_start=np.array([start]),
            infer_s=np.array([time.time() - start]),
        )
        return out
