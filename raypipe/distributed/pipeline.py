"""One video through the cluster: probe → plan → Ray Data (decode → infer → encode) → assemble.

The driver probes and plans (timestamps only) before it touches the cluster, so a bad
input or model fails at once, typed, with nothing written. The chunks then go through
:mod:`raypipe.distributed.dataset`; :mod:`raypipe.distributed.runner` follows them and
has the video assembled (:mod:`raypipe.distributed.assembly`) when the last is in.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from raypipe import storage
from raypipe.config import OUTPUT_FORMATS, RunConfig, build_run_config
from raypipe.distributed.chunk_log import ChunkLog
from raypipe.distributed.chunk_task import (
    ChunkTask,
    output_held,
    remove_work,
    run_dir_for,
    work_root,
)
from raypipe.distributed.cluster import command_ends_if_cluster_lost, on_one_node_here
from raypipe.distributed.dataset import build_dataset, fused_lanes, video_source
from raypipe.distributed.monitor import Progress
from raypipe.distributed.planning import (
    PlannedVideo,
    VideoJob,
    error_of,
    plan_video,
    write_run_record,
)
from raypipe.distributed.runner import Runner
from raypipe.distributed.setup import (
    StartedRun,
    check_output,
    check_side_file,
    check_table_output,
    load_run,
    model_facts,
    size_local_store,
    start_run,
    table_output,
)
from raypipe.distributed.stats import RunStats
from raypipe.distributed.workload import LoadedModel
from raypipe.errors import ConfigError, StorageError
from raypipe.exiting import after_ray, in_command
from raypipe.inputs import not_one_video
from raypipe.media.encode import option_problem
from raypipe.media.source import is_local, local_path
from raypipe.reuse import Provenance

log = logging.getLogger("raypipe")


_STREAMS = frozenset({"-", "pipe:", "pipe:0", "pipe:1"})  # (/dev/stdin: a file redirected in works)


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
    for given, what in ((input, "input"), (output, "output")):
        if str(given) in _STREAMS:  # "'./-' does not exist", "has extension '(none)'"
            raise ConfigError(
                f"{what} {str(given)!r}: raypipe reads and writes files, not standard input "
                "or output (it reads a video's chunks at their places, and writes an output "
                "whole once its segments are in); give a path or URL"
            )
    input = storage.absolute(storage.path_text(input, "input"))
    output = storage.absolute(storage.path_text(output, "output"))
    if is_local(output) and os.path.islink(local_path(output)):
        # written through, as ffmpeg writes it: the commit's rename replaced the link itself
        # (a dangling one without --overwrite; a sweep)
        output = os.path.realpath(local_path(output))
    several = not_one_video(input)
    if several:
        raise ConfigError(several)
    started = time.monotonic()
    if os.path.splitext(output)[1].lower() in OUTPUT_FORMATS:  # a video's: auto's encoder
        problem = option_problem(cfg.encode, output)
        if problem:
            raise ConfigError(problem)
    model = load_run(cfg)
    folder = ""  # an analysis run's OUTPUT folder where this run makes it (left empty: removed)
    if model.tensor:
        check_table_output(output, model)
        folder = "" if storage.exists(output) else output
        output = table_output(output, input)
    check_output(
        output,
        overwrite=cfg.overwrite,
        tensor=model.tensor,
        codec=cfg.encode.codec,
        source=input,
    )
    if cfg.stats_path:
        taken = {input: "the input", output: "the output"}
        check_side_file("--stats (stats_path)", cfg.stats_path, taken)
    with output_held(output, tensor=model.tensor):
        return _run_video(cfg, model, input, output, folder, started)


def _run_video(
    cfg: RunConfig, model: LoadedModel, input: str, output: str, folder: str, started: float
) -> RunStats:
    """:func:`process_video` from its checked options on: plan, run, assemble."""
    planned = plan_video(
        VideoJob(uri=input, output=output),
        cfg.chunk,
        resume=False,
        key=None,
        model=model_facts(model),
        encode=cfg.encode,
    )
    if planned.result is not None:  # the input failed to probe or plan
        raise error_of(planned.result)
    chunk_frames = max((ChunkTask.from_row(r).chunk.n_frames for r in planned.rows), default=0)
    cfg = size_local_store(
        cfg, model, height=planned.height, width=planned.width, max_frames=chunk_frames
    )
    progress = Progress(planned.n_frames, label=os.path.basename(input), enabled=not cfg.quiet)
    progress.begin()  # from here on a line every interval, Ray's start included
    try:
        run = start_run(cfg, model)
        progress.shared = run.shared
        planned.provenance = Provenance.of(run.key, planned.source_id)
        if planned.work_dir:  # its own folder in the work directory, as an archive's run's
            planned.work_dir = run_dir_for(output, planned.provenance)
            for row in planned.rows:
                row["work_dir"] = planned.work_dir
        write_run_record(planned)
        # a run never resumes (an archive does): its segments are of no use once it stops
        remove_run_folder = (
            functools.partial(remove_work, planned.work_dir) if planned.work_dir else lambda: 0
        )
        try:
            with command_ends_if_cluster_lost(remove_run_folder):
                return _process(
                    run,
                    model,
                    planned,
                    output,
                    progress,
                    started=started,
                    chunk_frames=chunk_frames,
                )
        except BaseException:
            left = remove_run_folder()  # an interrupted run's stayed for good (a sweep)
            warn = functools.partial(_warn_left, input, planned.work_dir)
            if in_command():  # again once Ray is down: an actor's last chunk landed after
                # the removal (a library caller's Ray stays up); what is left then is
                # said (it was said before the second removal, which took it: a sweep)
                after_ray(lambda: warn(remove_run_folder()))
            else:
                warn(left)
            if model.tensor:  # the video's partition folder and an OUTPUT this run made
                storage.remove_empty_dirs(storage.split(output)[0], folder)
            raise
    finally:
        progress.stop()  # after close(): nothing; on an error, the error's line comes next


_output_written: list[Callable[[RunStats], None]] = []


@contextlib.contextmanager
def when_output_written(hook: Callable[[RunStats], None]) -> Iterator[None]:
    """Inside, :func:`process_video` calls ``hook`` with the run's stats as soon as its
    output is in place, before it returns: ``raypipe serve`` takes a cancel that comes
    after that as too late (the run stands), not as one that leaves no output."""
    _output_written.append(hook)
    try:
        yield
    finally:
        _output_written.remove(hook)


def _warn_left(input: str, work_dir: str, left: int) -> None:
    """Say that ``left`` files of a stopped run's work folder could not be removed."""
    if left:
        log.warning(
            "%s: its work folder %s could not be removed (%d files left); remove it by hand",
            os.path.basename(input),
            work_root(work_dir),
            left,
        )


def _process(
    run: StartedRun,
    model: LoadedModel,
    planned: PlannedVideo,
    output: str,
    progress: Progress,
    *,
    started: float,
    chunk_frames: int,
) -> RunStats:
    """:func:`process_video`'s run of its planned video on the started ``run``."""
    cfg, actors, input = run.cfg, run.actors, planned.job.uri
    runner = Runner(
        cfg,
        chunk_log=ChunkLog(),
        keep_chunk_stats=True,
        per_video_metrics=True,
        on_frames=progress.update,
        assemble_here=on_one_node_here(),  # its machine is this one: no task to wait for
    )
    lanes = fused_lanes(planned, actors)
    ds = build_dataset(
        video_source([planned], lanes=lanes),
        cfg,
        actors,
        model,
        warmup_frames=chunk_frames,
        max_workers=max(1, len(planned.rows)),
        handoff=run.handoff,
        warmup_picture=planned.picture,
        lanes=lanes > 0,
    )
    results = runner.run(ds)
    result = next(results)  # a failed chunk fails the video at once: stop the pipeline
    results.close()
    if not result.ok:
        raise error_of(result)
    # an analysis run's output is the folder given (its video's partition inside: read
    # alone, one part file lost the video_id column the folder's hive path gives)
    # OUTPUT/video_id=ID/part-0.parquet (table_output): OUTPUT
    given = storage.split(storage.split(output)[0])[0] if model.tensor else output
    stats = RunStats(input=input, output=given, chunks=result.chunks, workers=actors.workers)
    stats.add_chunks(result.chunk_stats)
    stats.set_gpu(result.gpu_samples, result.gpu_notes, uses_gpu=actors.uses_gpu)
    stats.frames = result.frames_out
    stats.assembly = {
        "seconds": round(result.assembly_seconds, 3),
        "in_driver": result.assembly_pid == os.getpid(),
    }
    stats.wall_seconds = time.monotonic() - started
    for hook in _output_written:
        hook(stats)
    progress.close(f"{os.path.basename(input)}: {result.frames_out} frames -> {output}")
    if cfg.stats_path:
        try:
            stats.write(cfg.stats_path)
        except StorageError as e:  # it read as if the run had failed whole (a sweep)
            raise StorageError(
                f"{given} is written ({result.frames_out} frames), but not its stats: {e}"
            ) from e
    return stats
