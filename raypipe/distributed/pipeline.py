"""One video through the cluster: probe → plan → Ray Data (decode → infer → encode) → assemble.

The driver probes and plans (timestamps only), then iterates a Ray Data dataset whose rows
are chunks: decode tasks put frames in the row, the actor pool replaces them with the
model's output, encode tasks replace them with a segment of a few hundred KB. Only those
encoded rows reach the driver, which writes each segment to a work directory next to the
output as it arrives (memory stays bounded by the segments in flight, not by the video's
length) and assembles them in chunk order at the end. Ray Data's order is not relied on.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from typing import Any

import ray

from raypipe.config import RunConfig, build_run_config
from raypipe.distributed.actors import InferActor
from raypipe.distributed.cluster import ActorPlan, connect, plan_actors
from raypipe.distributed.monitor import Progress
from raypipe.distributed.stages import chunk_row, decode_stage, encode_stage
from raypipe.distributed.stats import RunStats
from raypipe.errors import ConfigError, OutputExistsError, RaypipeError
from raypipe.infer.models import FrameModel, resolve_model
from raypipe.media.encode import check_encoder
from raypipe.media.mux import assemble, output_format
from raypipe.media.plan import ChunkPlan, plan_chunks
from raypipe.media.probe import VideoInfo, probe
from raypipe.media.source import is_local

log = logging.getLogger("raypipe")


def process_video(
    input: str, output: str, config: RunConfig | None = None, **options: Any
) -> RunStats:
    """Process one video with a model on the Ray cluster and write ``output``; return stats.

    ``options`` are the flat option names of :func:`raypipe.config.build_run_config`
    (``model``, ``chunk_frames``, ``workers``, ``batch_size``, ``device``, ``codec``, ``crf``,
    ``preset``, ``address``, ``stats_path``, ``overwrite``, ...), applied over ``config``.
    Raises a :class:`~raypipe.errors.RaypipeError` subclass and leaves nothing at ``output``
    when the run fails.
    """
    cfg = build_run_config(config, **options)
    input, output = os.fspath(input), os.fspath(output)
    _check_output(output, overwrite=cfg.overwrite)
    check_encoder(cfg.encode)
    started = time.monotonic()
    info = probe(input)
    plan = plan_chunks(info, cfg.chunk)
    model_bytes, _ = resolve_model(cfg.model.model)
    FrameModel(model_bytes, device="cpu")  # fails here, typed, when the model does not load
    connect(cfg.runtime)
    actors = plan_actors(cfg.runtime, cfg.model)
    stats = RunStats(input=input, output=output, chunks=len(plan), workers=actors.workers)
    work_dir = _work_dir(output)
    os.makedirs(work_dir, exist_ok=True)
    try:
        progress = Progress(info.n_frames, label=os.path.basename(input), enabled=not cfg.quiet)
        segments = _run_chunks(info, plan, cfg, actors, model_bytes, work_dir, stats, progress)
        assemble(segments, output, info)
        progress.close(f"{os.path.basename(input)}: {info.n_frames} frames -> {output}")
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    stats.frames = info.n_frames
    stats.wall_seconds = time.monotonic() - started
    if cfg.stats_path:
        stats.write(cfg.stats_path)
    return stats


def _check_output(output: str, *, overwrite: bool) -> None:
    if not is_local(output):
        raise ConfigError(
            f"output '{output}' is not a local path; one-video runs write local files"
        )
    output_format(output)
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise ConfigError(f"output directory '{parent}' does not exist; create it first")
    if os.path.exists(output) and not overwrite:
        raise OutputExistsError(f"output '{output}' exists; pass --overwrite to replace it")


def _work_dir(output: str) -> str:
    directory, name = os.path.split(os.path.abspath(output))
    return os.path.join(directory, f".{name}.raypipe-work")


def build_dataset(
    info: VideoInfo, plan: ChunkPlan, cfg: RunConfig, actors: ActorPlan, model_bytes: bytes
) -> ray.data.Dataset:
    """The lazy Ray Data pipeline of one video: one row per chunk, segments out."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = not cfg.quiet
    rows = [chunk_row(info, c) for c in plan.chunks]
    ds: ray.data.Dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    ds = ds.map(decode_stage, num_cpus=1)
    with warnings.catch_warnings():
        # Ray 2.6x deprecates remote args given as keywords (scheduling_strategy here) with
        # no named replacement yet; pyproject pins ray below the release that removes them.
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = _infer_stage(
            ds, info, cfg, actors, model_bytes, workers=min(actors.workers, len(rows))
        )
    return ds.map(functools.partial(encode_stage, config=cfg.encode), num_cpus=1)


def _infer_stage(
    ds: ray.data.Dataset,
    info: VideoInfo,
    cfg: RunConfig,
    actors: ActorPlan,
    model_bytes: bytes,
    *,
    workers: int,
) -> ray.data.Dataset:
    return ds.map_batches(
        InferActor,
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=2),
        num_gpus=actors.num_gpus,
        num_cpus=actors.num_cpus,
        # SPREAD puts the actors on as many nodes as it can, and remote args that differ
        # from decode's keep Ray Data from fusing decode into the actors: decode must stay
        # separate CPU tasks, run anywhere in the cluster while the actors infer.
        scheduling_strategy="SPREAD",
        fn_constructor_kwargs={
            "model_bytes": model_bytes,
            "device": cfg.model.device,
            "batch_size": cfg.model.batch_size,
            "intra_op_threads": actors.intra_op_threads,
            "warmup_hw": (info.height, info.width),
        },
    )


def _run_chunks(
    info: VideoInfo,
    plan: ChunkPlan,
    cfg: RunConfig,
    actors: ActorPlan,
    model_bytes: bytes,
    work_dir: str,
    stats: RunStats,
    progress: Progress,
) -> list[str]:
    ds = build_dataset(info, plan, cfg, actors, model_bytes)
    paths: dict[int, str] = {}
    for row in _iter_rows(ds):
        index = int(row["index"])
        path = os.path.join(work_dir, f"{row['chunk_id']}.rpseg")
        tmp = f"{path}.part"
        with open(tmp, "wb") as f:
            f.write(row["segment"])
        os.replace(tmp, path)
        paths[index] = path
        stats.add_chunk(row)
        progress.update(int(row["n_frames"]))
    missing = sorted(set(range(len(plan))) - set(paths))
    if missing:
        raise RaypipeError(f"chunks {missing[:10]} never came back from the pipeline")
    return [paths[i] for i in range(len(plan))]


def _iter_rows(ds: ray.data.Dataset) -> Iterator[dict[str, Any]]:
    try:
        yield from ds.iter_rows()
    except RaypipeError:
        raise
    except Exception as e:  # noqa: BLE001 - Ray wraps worker errors; surface ours typed
        cause = _raypipe_cause(e)
        if cause is not None:
            raise cause from e
        raise


def _raypipe_cause(e: BaseException) -> RaypipeError | None:
    seen: set[int] = set()
    stack: list[BaseException | None] = [e]
    while stack:
        err = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, RaypipeError):
            return err
        stack.extend([err.__cause__, err.__context__, getattr(err, "cause", None)])
    return None
