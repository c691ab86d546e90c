"""One video through the cluster: probe → plan → Ray Data (decode → infer → encode) → assemble.

The driver probes and plans (timestamps only) before it touches the cluster, so a bad
input or model fails at once, typed, with nothing written. The chunks then go through
:mod:`raypipe.distributed.engine`; see there for how segments come back and are assembled.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from raypipe import storage
from raypipe.config import RunConfig, build_run_config
from raypipe.distributed.cluster import connect, plan_actors
from raypipe.distributed.engine import (
    VideoJob,
    error_of,
    fingerprint,
    plan_video,
    run_planned,
)
from raypipe.distributed.monitor import Progress
from raypipe.distributed.stats import RunStats
from raypipe.errors import ConfigError, OutputExistsError
from raypipe.infer.models import FrameModel, resolve_model
from raypipe.infer.simulated import is_simulated, parse_hold_seconds
from raypipe.media.encode import check_encoder
from raypipe.media.mux import output_format
from raypipe.media.source import is_local

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
    check_output(output, overwrite=cfg.overwrite)
    check_encoder(cfg.encode)
    started = time.monotonic()
    model_bytes = load_model_bytes(cfg.model.model)
    run_key = fingerprint(cfg, model_bytes)
    planned = plan_video(
        VideoJob(uri=input, output=output), cfg.chunk, resume=False, run_key=run_key
    )
    if planned.result is not None:  # the input failed to probe or plan
        raise error_of(planned.result)
    connect(cfg.runtime)
    actors = plan_actors(cfg.runtime, cfg.model)
    progress = Progress(planned.n_frames, label=os.path.basename(input), enabled=not cfg.quiet)
    (result,) = run_planned([planned], cfg, actors, model_bytes, run_key, on_frames=progress.update)
    if not result.ok:
        raise error_of(result)
    progress.close(f"{os.path.basename(input)}: {result.frames_out} frames -> {output}")
    stats = RunStats(input=input, output=output, chunks=result.chunks, workers=actors.workers)
    stats.add_chunks(result.chunk_stats)
    stats.frames = result.frames_out
    stats.wall_seconds = time.monotonic() - started
    if cfg.stats_path:
        stats.write(cfg.stats_path)
    return stats


def load_model_bytes(model: str) -> bytes:
    """The model's bytes, checked on the driver so a model that does not load fails here,
    typed, before any cluster work starts. Simulated accelerators have none."""
    if is_simulated(model):
        parse_hold_seconds(model)
        return b""
    model_bytes, _ = resolve_model(model)
    FrameModel(model_bytes, device="cpu")
    return model_bytes


def check_output(output: str, *, overwrite: bool) -> None:
    """Fail before any work when ``output`` cannot be written or exists already."""
    output_format(output)
    if is_local(output):
        parent = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(parent):
            raise ConfigError(f"output directory '{parent}' does not exist; create it first")
    if storage.exists(output) and not overwrite:
        raise OutputExistsError(f"output '{output}' exists; pass --overwrite to replace it")
