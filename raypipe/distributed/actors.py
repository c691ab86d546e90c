"""The inference actor: a thin class holding one warm model or user processor.

``__init__`` takes one :class:`~raypipe.distributed.workload.ActorJob`, builds what it runs
(Ray has already set ``CUDA_VISIBLE_DEVICES``, so device 0 is this actor's GPU; on a GPU
the TensorRT engine comes from the shared engine cache, see :mod:`raypipe.infer.factory`)
and, for a model, runs one warm-up batch so the first chunk does not pay for graph
optimisation or an engine build (a processor's ``setup`` is its warm-up: user code never
sees made-up frames); ``__call__`` hands each chunk to it and records where it ran. An image
model or processor replaces the row's frames; a tensor one turns the chunk into a small
Parquet table. A temporal model (:class:`~raypipe.infer.temporal_model.TemporalModel`) or
processor gets the chunk's frames with the context decoded around them and returns the
chunk's own frames (twice as many when it interpolates); the row's pts become the chunk's
own. A chunk handed off as packed YUV (``--handoff``, :mod:`raypipe.media.yuv`) runs
through a model with the conversion in its graph where the actor runs the wrapped graph (a
GPU), one per source size and colour (a few kept), or is converted on the host first. A
GPU actor samples its card's utilisation with NVML and sends the samples
with each chunk. The actor also notes why a better provider was not granted
(:func:`raypipe.infer.provider_check.provider_notes`: the facts ``raypipe doctor`` shows,
sent with each chunk into the run stats).

Failures are deterministic and are never raised out of the actor (Ray would restart it,
retry, and end with a long traceback): a model or processor that cannot be built fails
every chunk it gets with the typed error as the row's ``error_type``/``error_message`` (and
the traceback in ``error_detail``, which ``--verbose`` prints); a warm-up that fails is
only noted, and each chunk then fails, or not, on its own frames.
"""

from __future__ import annotations

import functools
import json
import os
import time
import traceback
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import ray

from raypipe import faults
from raypipe.config import engine_cache_from_env
from raypipe.distributed.chunk_task import is_work
from raypipe.distributed.stages import (
    EMPTY_FRAMES,
    context_counts,
    error_fields,
    own_pts,
    tensor_table_bytes,
)
from raypipe.distributed.workload import ActorJob
from raypipe.errors import ModelError, ModelLoadError, ProcessorError, one_line
from raypipe.infer.factory import SessionSettings
from raypipe.infer.models import FrameModel, ModelSpec, gpu_profile, session_graph
from raypipe.infer.pixels import hold_cpu_threads
from raypipe.infer.processors import ProcessorContext, ProcessorRunner
from raypipe.infer.provider_check import provider_notes
from raypipe.infer.simulated import SimulatedModel, is_simulated
from raypipe.infer.temporal_model import TemporalModel
from raypipe.media.picture import PictureFormat
from raypipe.media.yuv import YuvInput
from raypipe.recycle import Allocate, RecycledArrays, small_pages

DETAIL_CHARS = 8000  # the end of a traceback kept in a row's error_detail


class Runner(Protocol):
    """What an actor runs per chunk: a model or a processor."""

    @property
    def providers(self) -> list[str]: ...

    def run(
        self, frames: np.ndarray, *, before: int = 0, after: int = 0
    ) -> np.ndarray | dict[str, np.ndarray]: ...
    def warmup(self, height: int, width: int, frames: int = 0) -> None: ...


YUV_MODELS = 4
"""Models for YUV frames an actor keeps (one per frame size, matrix and range, so one per
video in most runs): each is a session, and on a GPU a TensorRT engine."""


class _ModelRunner:
    def __init__(
        self,
        model: FrameModel | TemporalModel | SimulatedModel,
        batch_size: int,
        *,
        tensor: bool,
        yuv_model: Callable[[YuvInput], FrameModel] | None = None,
        over_input: bool = False,
    ) -> None:
        self.model, self.batch_size, self.tensor = model, batch_size, tensor
        # frames may be written over the chunk's own (run's ``into``): no output array of
        # their shape is kept, nor touched at the warm-up
        self.over_input = over_input
        self.providers = list(model.providers)
        self.pixels = getattr(model, "pixels", "")
        # each chunk's frames go into the array the last chunk's went into once Ray has
        # copied those out (raypipe/recycle.py)
        self.outputs = RecycledArrays()
        self.converted = RecycledArrays()  # YUV frames converted on the host, chunk by chunk
        self._make_yuv_model = yuv_model
        self._yuv_models: OrderedDict[YuvInput, FrameModel] = OrderedDict()
        # YUV frames are converted in the model's graph where it runs its wrapped graph (on
        # a GPU), else on the host, as decode would have (the graph's look-ups are slow on a
        # CPU: benchmarks/handoff.py)
        self.yuv_in_graph = self.pixels == "graph"
        self.yuv_note = ""  # why YUV is converted on the host after all (a model not made)

    def yuv_model(self, yuv: YuvInput) -> FrameModel:
        """The model for packed YUV frames of ``yuv`` (made on first use, a few kept)."""
        model = self._yuv_models.pop(yuv, None)
        if model is None:
            if self._make_yuv_model is None:
                raise ValueError("this actor's model takes RGB frames, not YUV")
            model = self._make_yuv_model(yuv)
        self._yuv_models[yuv] = model
        while len(self._yuv_models) > YUV_MODELS:
            self._yuv_models.popitem(last=False)
        return model

    def _yuv_model_or_none(self, yuv: YuvInput) -> FrameModel | None:
        """:meth:`yuv_model`, or None (and from then on YUV converted on the host, saying
        why in :attr:`yuv_note`) when it cannot be made: the frames the RGB path would
        have given still reach the model, so a run that works with RGB does not fail."""
        try:
            return self.yuv_model(yuv)
        except Exception as e:  # noqa: BLE001 - the host conversion gives the same frames
            self.yuv_in_graph = False
            self.yuv_note = f"YUV converted on the host: the model for YUV frames: {one_line(e)}"
            return None

    def run(
        self,
        frames: np.ndarray,
        *,
        before: int = 0,
        after: int = 0,
        yuv: YuvInput | None = None,
        into: np.ndarray | None = None,
    ) -> np.ndarray | dict[str, np.ndarray]:
        """The chunk's new frames (or a tensor model's arrays). ``into``: an array the new
        frames may be written over when they have its shape and dtype (the chunk's decoded
        frames, when nothing else reads them: :class:`~raypipe.distributed.fused.ChunkActor`);
        a per-frame model's batches then land where their own input frames were, each once
        the model has read them."""
        if yuv is not None and self.yuv_in_graph:  # packed YUV frames (the YUV hand-off)
            model = self._yuv_model_or_none(yuv)
            if model is not None:
                return model.run(frames, self.batch_size, allocate=self.outputs.empty)
        if yuv is not None:
            frames = yuv.to_rgb(frames, allocate=self.converted.empty)
        if isinstance(self.model, TemporalModel):
            return self.model.run(frames, self.batch_size, before=before, after=after)
        if before or after:
            raise ValueError(f"a per-frame model takes no context frames, got {before}/{after}")
        if self.tensor:
            return self.model.run_tensors(frames, self.batch_size)  # type: ignore[union-attr]
        if isinstance(self.model, FrameModel):
            allocate = self.outputs.empty
            if into is not None:
                allocate = functools.partial(_over, into, allocate)
            return self.model.run(frames, self.batch_size, allocate=allocate)
        return self.model.run(frames, self.batch_size)

    def warmup(
        self, height: int, width: int, frames: int = 0, *, yuv: YuvInput | None = None
    ) -> None:
        # a whole batch, the shape the chunks run: a first run at a new shape allocates
        # (ORT's buffers, HostRunner's outputs); warmed at 2 frames, the first 4K chunk at
        # batch 8 took 8.5 s against 2.3-2.7 s for the next ones (benchmarks/README.md)
        model = self.model
        if yuv is not None and self.yuv_in_graph:
            model = self._yuv_model_or_none(yuv) or self.model
        out = model.warmup(height, width, self.batch_size)
        if self.over_input and isinstance(out, np.ndarray) and out.shape[1:] == (height, width, 3):
            return  # the chunks' frames are written over their decoded ones
        if isinstance(out, np.ndarray) and frames > len(out):  # more than one batch
            # The first chunk's output array, touched now, while the first chunk decodes:
            # new memory costs the kernel's page faults (a 60-frame 4K chunk is 1.5 GB).
            # The pool hands it to the first chunk, or its first frames to a shorter one.
            self.outputs.empty((frames, *out.shape[1:]), out.dtype).fill(0)


def _over(into: np.ndarray, otherwise: Allocate, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """``into`` where it has ``shape`` and ``dtype``, else ``otherwise(shape, dtype)``."""
    if into.shape == tuple(shape) and into.dtype == np.dtype(dtype) and into.flags.writeable:
        return into
    return otherwise(shape, dtype)


def _detail(e: BaseException) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__))[-DETAIL_CHARS:]


def _at_frames(batch: dict[str, Any]) -> str:
    """Where in the video a chunk's frames failed a model or processor, to put before its
    error (which said nothing of it: a frame to reproduce the failure with was not to be
    found but by bisecting): the video's frame numbers, from 0 in display order."""
    first, n = int(batch["first_index"][0]), int(batch["n_frames"][0])
    return f"at frames {first}..{first + max(n, 1) - 1} (chunk {int(batch['index'][0])}): "


class InferActor:
    """Ray Data callable class: one chunk per call (``batch_size=1``, numpy batches)."""

    OVER_INPUT = False
    """A per-frame model's new frames are written over the chunk's decoded ones where
    they have their shape and dtype: only where the actor decoded them itself (the
    split pipeline's chunks are read-only views of Ray's object store)."""

    def __init__(self, job: ActorJob) -> None:
        ctx = ray.get_runtime_context()
        self.actor_id = ctx.get_actor_id() or ""
        self.node_id = ctx.get_node_id()
        self.gpu_ids = [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])]
        self.cuda_visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        self.job = job
        self.tensor = job.model.tensor
        self.notes: list[str] = []
        self.monitor = self._start_monitor()
        self._sent = 0
        self.context: ProcessorContext | None = None
        self.runner: Runner | None = None
        self.failure: BaseException | None = None
        self.failure_detail = ""
        self.warmup_error = ""  # kept for debugging only: chunks fail (or not) on their own
        self.provider_notes = "[]"
        hold_cpu_threads(job.plan.intra_op_threads)
        small_pages()  # before the warm-up's arrays
        self._prepare()

    def _prepare(self) -> None:
        """Build the model (or processor) and run its warm-up; a failure is kept for every
        chunk of this actor (:attr:`failure`)."""
        job = self.job
        try:
            self.runner = self._build(self._settings())
        except Exception as e:  # noqa: BLE001 - every chunk of this actor gets the typed error
            self.failure, self.failure_detail = e, _detail(e)
        if self.runner is not None and job.warmup_hw is not None:
            try:
                if job.warmup_yuv is not None and isinstance(self.runner, _ModelRunner):
                    self.runner.warmup(*job.warmup_hw, job.warmup_frames, yuv=job.warmup_yuv)
                else:
                    self.runner.warmup(*job.warmup_hw, frames=job.warmup_frames)
            except Exception as e:  # noqa: BLE001 - chunks fail (or not) on their own frames
                self.warmup_error = error_fields(e)["error_message"]
        # after the warm-up, which may build the model for YUV frames with its own providers
        self.provider_notes = json.dumps(self._provider_notes())

    def _provider_notes(self) -> list[str]:
        """Why the sessions do not run on a better provider (the model's, or the processor's
        sessions built in ``setup``)."""
        if self.runner is None:
            return []
        notes = list(self.notes)
        for record in self.context.records if self.context is not None else []:
            notes.extend(n for n in record["notes"] if n not in notes)
        return provider_notes(
            self.job.config.device, self.runner.providers, notes, has_gpu=bool(self.gpu_ids)
        )

    def _settings(self) -> SessionSettings:
        cfg, plan = self.job.config, self.job.plan
        return SessionSettings(
            device=cfg.device,
            on_gpu=bool(self.gpu_ids),
            precision=cfg.precision,
            engine_cache=cfg.engine_cache or engine_cache_from_env(),
            batch_size=cfg.batch_size,
            intra_op_threads=plan.intra_op_threads,
            gpu_mem_limit_bytes=self._memory_budget(plan.num_gpus if plan.uses_gpu else 1.0),
        )

    def _build(self, settings: SessionSettings) -> Runner:
        loaded, cfg = self.job.model, self.job.config
        if loaded.processor is not None:
            self.context = ProcessorContext(settings, gpu_ids=self.gpu_ids)
            return ProcessorRunner(loaded.processor, self.context)
        if is_simulated(cfg.model):
            return _ModelRunner(SimulatedModel(cfg.model), cfg.batch_size, tensor=False)
        return _ModelRunner(
            self._load(settings),
            cfg.batch_size,
            tensor=self.tensor,
            yuv_model=functools.partial(self._load_yuv, settings),
            over_input=self.OVER_INPUT,
        )

    def _load_yuv(self, settings: SessionSettings, yuv: YuvInput) -> FrameModel:
        """The model for the packed YUV frames of ``yuv`` (the YUV hand-off): the wrapped
        graph with the conversion in front; on a GPU its own TensorRT profile and engine,
        for that input."""
        spec = self.job.model.spec or ModelSpec()
        data, threads = self.job.model.data, settings.intra_op_threads
        if not settings.uses_gpu:
            return FrameModel(
                data, spec=spec, device=settings.device, intra_op_threads=threads, yuv=yuv
            )
        graph = session_graph(data, spec, on_gpu=True, yuv=yuv)
        if graph is None:
            raise ModelLoadError("the model cannot take YUV frames: it is not wrapped")
        setup = settings.provider_setup(
            graph.data, input_size=(yuv.height, yuv.width), layout="I420"
        )
        self.notes.extend(n for n in setup.notes if n not in self.notes)
        return FrameModel(
            data,
            spec=spec,
            device=settings.device,
            intra_op_threads=threads,
            providers=setup.providers,
            provider_options=setup.provider_options,
            yuv=yuv,
        )

    def _load(self, settings: SessionSettings) -> FrameModel | TemporalModel:
        loaded, warmup_hw = self.job.model, self.job.warmup_hw
        spec = loaded.spec or ModelSpec()
        threads = settings.intra_op_threads
        if spec.temporal.active:  # whole frames; on a GPU CUDA (no one-frame TRT profile)
            setup = settings.provider_setup(loaded.data)
            self.notes.extend(setup.notes)
            return TemporalModel(
                loaded.data,
                spec=spec,
                device=settings.device,
                intra_op_threads=threads,
                providers=setup.providers,
                provider_options=setup.provider_options,
            )
        if not settings.uses_gpu or warmup_hw is None:
            return FrameModel(
                loaded.data, spec=spec, device=settings.device, intra_op_threads=threads
            )
        # The session runs the model wrapped for uint8 frames (NHWC) where it can be, so the
        # TensorRT profile and engine are those of the wrapped graph, for the frames and
        # batches its calls get (2 frames of 4K, not 8): as `raypipe build-engines` builds
        profile = gpu_profile(loaded.data, spec, warmup_hw, settings.batch_size)
        setup = settings.provider_setup(
            profile.data,
            input_size=profile.hw,
            layout=profile.layout,
            batch_size=profile.batch_size,
        )
        self.notes.extend(setup.notes)
        return FrameModel(
            loaded.data,
            spec=spec,
            device=settings.device,
            intra_op_threads=threads,
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

    def _process(
        self,
        batch: dict[str, Any],
        frames: np.ndarray,
        context: tuple[int, int],
        yuv: YuvInput | None = None,
    ) -> tuple[np.ndarray, bytes]:
        """The chunk's new frames (image) or Parquet table (tensor); raises its failure.
        ``context``: frames (before, after) of context around the chunk's own frames.
        ``yuv``: the frames are packed YUV of that source (the YUV hand-off)."""
        if self.failure is not None:
            raise self.failure
        assert self.runner is not None
        if yuv is not None:
            if not isinstance(self.runner, _ModelRunner):
                raise ValueError("a processor gets RGB frames, but the chunk came as YUV")
            return self.runner.run(frames, yuv=yuv), b""  # type: ignore[return-value]
        if self.context is not None and not frames.flags.writeable:
            frames = frames.copy()  # a view of the object store; a processor may write
        if isinstance(self.runner, _ModelRunner) and self.runner.over_input:
            result = self.runner.run(frames, before=context[0], after=context[1], into=frames)
        else:
            result = self.runner.run(frames, before=context[0], after=context[1])
        if not self.tensor:
            return result, b""  # type: ignore[return-value]
        row = {k: v[0] for k, v in batch.items() if k != "frames"}
        table = tensor_table_bytes(row, np.asarray(batch["pts"][0]), result)  # type: ignore[arg-type]
        return EMPTY_FRAMES, table

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if len(batch["chunk_id"]) != 1:
            raise ValueError(f"InferActor takes one chunk per call, got {len(batch['chunk_id'])}")
        start, cpu = time.time(), time.process_time()
        out = {k: v for k, v in batch.items() if k != "frames"}
        frames = np.asarray(batch["frames"][0])
        segment, detail = b"", ""
        pixels = getattr(self.runner, "pixels", "")
        if is_work({"kind": batch["kind"][0], "error_type": batch["error_type"][0]}):
            faults.checkpoint("infer", str(batch["chunk_id"][0]), node=self.node_id)
            try:
                context = context_counts({"context": batch["context"][0]})
                yuv = None
                if str(batch.get("handoff", [""])[0]) == "yuv":
                    yuv = YuvInput.of(PictureFormat.from_json(str(batch["picture"][0])))
                frames, segment = self._process(batch, frames, context, yuv)
                runner = self.runner
                if yuv is not None and isinstance(runner, _ModelRunner):
                    if runner.yuv_in_graph:
                        pixels = "graph"  # converted and pre/post-processed in the graph
                    if runner.yuv_note:
                        out["handoff_note"] = np.array([runner.yuv_note])
                if context != (0, 0):  # the chunk's own pts, without its context's
                    out["pts"] = own_pts(batch["pts"][0], *context)[None]
            except Exception as e:  # noqa: BLE001 - becomes the video's typed error row
                fields = error_fields(e)
                if e is not self.failure and isinstance(e, (ModelError, ProcessorError)):
                    fields["error_message"] = _at_frames(batch) + fields["error_message"]
                out.update({k: np.array([v]) for k, v in fields.items()})
                detail = self.failure_detail if e is self.failure else _detail(e)
                frames = EMPTY_FRAMES
        out.update(
            frames=frames[None],
            error_detail=np.array([detail]),
            infer_node=np.array([self.node_id]),
            infer_pid=np.array([os.getpid()]),
            actor_id=np.array([self.actor_id]),
            gpu_ids=np.array([json.dumps(self.gpu_ids)]),
            cuda_visible_devices=np.array([self.cuda_visible_devices]),
            providers=np.array([json.dumps(self.runner.providers if self.runner else [])]),
            provider_notes=np.array([self.provider_notes]),
            sessions=np.array([json.dumps(self.context.records if self.context else [])]),
            gpu_samples=np.array([self._gpu_samples()]),
            infer_start=np.array([start]),
            infer_s=np.array([time.time() - start]),
            infer_cpu_s=np.array([time.process_time() - cpu]),
            pixels=np.array([pixels]),
        )
        if self.tensor:
            out.update(
                segment=np.array([segment], dtype=object),
                out_width=np.array([0]),
                out_height=np.array([0]),
            )
        return out


def actor_pool_map(
    ds: ray.data.Dataset,
    actor_class: type[InferActor],
    job: ActorJob,
    *,
    max_workers: int,
    in_flight: int,
    **options: Any,
) -> ray.data.Dataset:
    """``ds`` through a pool of ``min(job.plan.workers, max_workers)`` ``actor_class``
    actors built with ``job``, one chunk per call (one-row numpy batches), each actor
    reserving the plan's CPUs and GPUs and holding up to ``in_flight`` calls; the actors
    spread over as many nodes as Ray can (``SPREAD``). ``options``: more of
    ``map_batches``'."""
    plan = job.plan
    size = max(1, min(plan.workers, max_workers))
    with warnings.catch_warnings():
        # Ray 2.6x deprecates remote args given as keywords (scheduling_strategy here) with
        # no named replacement yet; pyproject pins ray below the release that removes them.
        warnings.simplefilter("ignore", DeprecationWarning)
        return ds.map_batches(
            actor_class,
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=in_flight),
            num_gpus=plan.num_gpus,
            num_cpus=plan.num_cpus,
            scheduling_strategy="SPREAD",
            **options,
        )
