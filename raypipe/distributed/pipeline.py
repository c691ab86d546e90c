"""One video through the cluster: probe → plan → Ray Data (decode → infer → encode) → assemble.

The driver probes and plans (timestamps only) before it touches the cluster, so a bad
input or model fails at once, typed, with nothing written. The chunks then go through
:mod:`raypipe.distributed.engine`; see there for how segments come back and are assembled.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

from raypipe import storage
from raypipe.config import RunConfig, build_run_config
from raypipe.distributed.cluster import ActorPlan, connect, plan_actors
from raypipe.distributed.engine import VideoJob, error_of, plan_video, run_planned
from raypipe.distributed.monitor import Progress
from raypipe.distributed.stats import RunStats
from raypipe.distributed.workload import LoadedModel
from raypipe.errors import ConfigError, OutputExistsError
from raypipe.infer.models import FrameModel, resolve_model_and_spec
from raypipe.infer.processor_refs import processor_ref
from raypipe.infer.simulated import is_simulated, parse_hold_seconds
from raypipe.media.encode import check_encoder, is_nvenc, nvenc_fallback, nvenc_problem
from raypipe.media.mux import container_refuses, output_format
from raypipe.media.probe import make_video_id
from raypipe.media.source import is_local
from raypipe.reuse import Provenance, ReuseKey, reuse_key

log = logging.getLogger("raypipe")


def process_video(
    input: str, output: str, config: RunConfig | None = None, **options: Any
) -> RunStats:
    """Process one video with a model on the Ray cluster and write ``output``; return stats.

    ``options`` are the flat option names of :func:`raypipe.config.build_run_config`
    (``model``, ``chunk_frames``, ``workers``, ``batch_size``, ``device``, ``codec``, ``crf``,
    ``preset``, ``address``, ``stats_path``, ``overwrite``, ...), applied over ``config``.
    ``output`` is a local path or an fsspec URL (``s3://...``). Raises a
    :class:`~raypipe.errors.RaypipeError` subclass and leaves nothing at ``output`` when the
    run fails.
    """
    cfg = build_run_config(config, **options)
    input, output = os.fspath(input), os.fspath(output)
    started = time.monotonic()
    model = load_model(cfg)
    if model.tensor:
        output = table_output(output, input)
    else:
        check_encoder(cfg.encode)
    check_output(output, overwrite=cfg.overwrite, tensor=model.tensor, codec=cfg.encode.codec)
    planned = plan_video(
        VideoJob(uri=input, output=output),
        cfg.chunk,
        resume=False,
        key=None,
        tensor=model.tensor,
    )
    if planned.result is not None:  # the input failed to probe or plan
        raise error_of(planned.result)
    connect(cfg.runtime, verbose=cfg.verbose)
    if not model.tensor:
        cfg = resolve_encoder(cfg)
    actors = plan_actors(cfg.runtime, cfg.model)
    planned.provenance = Provenance.of(run_key(cfg, model, actors), planned.source_id)
    progress = Progress(planned.n_frames, label=os.path.basename(input), enabled=not cfg.quiet)
    (result,) = run_planned([planned], cfg, actors, model, on_frames=progress.update)
    if not result.ok:
        raise error_of(result)
    progress.close(f"{os.path.basename(input)}: {result.frames_out} frames -> {output}")
    stats = RunStats(input=input, output=output, chunks=result.chunks, workers=actors.workers)
    stats.add_chunks(result.chunk_stats)
    stats.set_gpu(result.gpu_samples, result.gpu_notes, uses_gpu=actors.uses_gpu)
    stats.frames = result.frames_out
    stats.wall_seconds = time.monotonic() - started
    if cfg.stats_path:
        stats.write(cfg.stats_path)
    return stats


def resolve_encoder(cfg: RunConfig) -> RunConfig:
    """``cfg`` with an NVENC codec replaced by its software fallback when NVENC cannot run
    where encode tasks run (probed in a Ray task on the cluster), saying so once."""
    if not is_nvenc(cfg.encode.codec):
        return cfg
    import ray

    problem = ray.get(ray.remote(num_cpus=0)(nvenc_problem).remote(cfg.encode.codec))
    if problem is None:
        return cfg
    encode, message = nvenc_fallback(cfg.encode, problem)
    log.warning(message)
    return dataclasses.replace(cfg, encode=encode)


def run_key(cfg: RunConfig, model: LoadedModel, actors: ActorPlan) -> ReuseKey:
    """The reuse key of a run with ``model`` on ``actors`` (:func:`raypipe.reuse.reuse_key`;
    a processor's part is its :func:`~raypipe.infer.processor_refs.processor_identity`)."""
    return reuse_key(
        cfg,
        model_bytes=model.data,
        spec=model.spec,
        uses_gpu=actors.uses_gpu,
        processor=model.processor.identity if model.processor is not None else "",
        tensor=model.tensor,
    )


def load_model(cfg: RunConfig) -> LoadedModel:
    """The model's bytes and spec (sidecar or built-in, with the run's tile/resize/padding
    overrides), checked on the driver so a model that does not load fails here, typed,
    before any cluster work starts. Simulated accelerators have no bytes. A processor is
    loaded and checked here too (its class, its declared output), but its ``setup`` runs
    in the actors only."""
    if cfg.model.processor is not None:
        ref = processor_ref(cfg.model.processor)
        _check_sampling(cfg, tensor=ref.output == "tensor")
        return LoadedModel(data=b"", spec=None, tensor=ref.output == "tensor", processor=ref)
    if is_simulated(cfg.model.model):
        parse_hold_seconds(cfg.model.model)
        return LoadedModel(data=b"", spec=None, tensor=False)
    data, _, spec = resolve_model_and_spec(cfg.model.model)
    if cfg.model.tile is not None:
        spec = dataclasses.replace(spec, tile=cfg.model.tile)
    if cfg.model.tile_overlap is not None:
        spec = dataclasses.replace(spec, tile_overlap=cfg.model.tile_overlap)
    if cfg.model.resize is not None:
        spec = dataclasses.replace(spec, resize=cfg.model.resize)
    if cfg.model.pad_multiple is not None:
        spec = dataclasses.replace(spec, pad_multiple=cfg.model.pad_multiple)
    tensor = FrameModel(data, spec=spec, device="cpu").output_kind == "tensor"
    _check_sampling(cfg, tensor=tensor)
    return LoadedModel(data=data, spec=spec, tensor=tensor)


def _check_sampling(cfg: RunConfig, *, tensor: bool) -> None:
    if cfg.chunk.samples and not tensor:
        raise ConfigError(
            "frame sampling (every_n_frames / sample_fps) is for models that output tensors; "
            "a model that outputs frames must see every frame of the video"
        )


def table_output(output_dir: str, uri: str) -> str:
    """Where an analysis run writes ``uri``'s table: one hive partition per video,
    ``OUTPUT/video_id=ID/part-0.parquet`` (the id is in the path only, not a column)."""
    return storage.join(output_dir, f"video_id={make_video_id(uri)}", "part-0.parquet")


def check_output(
    output: str, *, overwrite: bool, tensor: bool = False, codec: str | None = None
) -> None:
    """Fail before any work when ``output`` cannot be written, cannot hold video encoded by
    ``codec``, or exists already."""
    if not tensor:
        output_format(output)
        refused = container_refuses(output, codec) if codec else ""
        if refused:
            raise ConfigError(f"output '{output}': {refused}")
    if is_local(output) and not tensor:
        parent = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(parent):
            raise ConfigError(f"output directory '{parent}' does not exist; create it first")
    if storage.exists(output) and not overwrite:
        raise OutputExistsError(f"output '{output}' exists; pass --overwrite to replace it")
