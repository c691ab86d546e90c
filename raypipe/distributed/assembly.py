"""Assembly: a finished video's segments into its output, as a Ray task off the driver.

When every chunk of a video has its segment in the work directory, the driver submits
:func:`assemble_video` for it: segments in chunk order plus the source's audio and
subtitles (:func:`raypipe.media.mux.assemble`), or the chunks' tables concatenated for an
analysis run, written atomically, tagged with what made them (:mod:`raypipe.reuse`); the
work directory is removed whether it succeeds or fails. It runs wherever the cluster has a
CPU, reads the segments from the work directory (a shared path or object storage) and
returns only a small :class:`Assembled`: no segment passes through the driver.

One exception: a single video on a Ray of one node on the driver's machine (the local Ray
raypipe started for it, or one the driver joined, such as a workstation's ``ray start
--head``: :func:`raypipe.distributed.cluster.on_one_node_here`) is assembled by the driver
itself, a plain call of :func:`assemble_video` when its last chunk is in. The work
directory and the output are on that machine too, and by then Ray Data's actors have gone
and no worker process of the job is left idle: a task waited 1.3-1.4 s for a new one to
start (benchmarks/README.md, session 41; on a running Ray, session 43).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import ray

from raypipe import faults, storage
from raypipe.distributed.chunk_task import remove_work, segment_uri, work_root
from raypipe.distributed.planning import VideoFacts
from raypipe.errors import InputError, ModelError, RaypipeError, one_line
from raypipe.infer.output_kind import VARYING_ADVICE
from raypipe.media.containers import output_format
from raypipe.media.jumps import from_text
from raypipe.media.mux import assemble
from raypipe.media.picture import PictureFormat
from raypipe.media.plan import chunk_id
from raypipe.reuse import (
    PROVENANCE_TAG,
    Provenance,
    not_provenance,
    provenance_tags,
    source_identity,
)


@dataclass(frozen=True)
class Assembled:
    """How one video's assembly went: frames (or table rows) written, or its error."""

    frames_out: int = 0
    error_type: str = ""
    error_message: str = ""
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()  # what the media layer warned of (a stream left out...)
    pid: int = 0  # the process that assembled it (the driver's, or a Ray worker's)


def segment_uris(facts: VideoFacts) -> list[str]:
    """Every chunk's segment of the video, in chunk order."""
    return [segment_uri(facts.work_dir, chunk_id(facts.video_id, i)) for i in range(facts.n_chunks)]


def check_source_unchanged(facts: VideoFacts) -> None:
    """Refuse to assemble where the source is not the one the video was planned from (its
    size or modification time, a store's version): a file replaced while its chunks ran
    gave an output of two videos' frames, reported done (a sweep)."""
    recorded = Provenance.parse(facts.provenance)
    if recorded is None:
        return
    try:
        now = source_identity(facts.uri)
    except (OSError, ValueError) as e:
        raise InputError(
            f"the source could not be read again before assembly ({type(e).__name__}: {e}); "
            "its chunks are not written as an output"
        ) from e
    if not recorded.same_source(now):
        raise InputError(
            "the source changed while the video was processed (its size or modification "
            "time): its chunks may hold frames of both versions, so no output is written; "
            "run again (a file still being written: once it is complete)"
        )


def assemble_video(facts: VideoFacts) -> Assembled:
    """Write ``facts.output`` from the segments in ``facts.work_dir`` and remove the work
    directory. Never raises for a failure of this video: the error is in the result."""
    started = time.monotonic()
    warned: list[str] = []
    faults.checkpoint("assembly", facts.video_id, node=_node_id())
    try:
        storage.remove_stale_staging(facts.output)  # an earlier attempt killed mid-way
        check_source_unchanged(facts)
        if facts.tensor:
            frames_out = _write_table(facts)
            if frames_out != facts.n_out:
                raise RaypipeError(
                    f"the table has {frames_out} rows, {facts.n_out} frames were sampled"
                )
        else:
            recorded = Provenance.parse(facts.provenance)
            muxer = output_format(facts.output)
            # the record, and the source's comment kept beside it (read by the muxing)
            tags = functools.partial(provenance_tags, recorded, muxer) if recorded else None
            with _warnings_into(warned, "raypipe.media"):
                assemble(
                    segment_uris(facts),
                    facts.output,
                    facts.uri,
                    tags=tags,
                    keep_tag=not_provenance,
                    per_frame=max(1, facts.n_out // facts.n_frames) if facts.n_frames else 1,
                    jumps=from_text(facts.jumps),
                    stereo=PictureFormat.from_json(facts.picture).stereo if facts.picture else "",
                )
            frames_out = facts.n_out or facts.n_frames  # an interpolating model doubles them
        result = Assembled(frames_out=frames_out)
    except Exception as e:  # noqa: BLE001 - the video fails alone
        result = Assembled(error_type=type(e).__name__, error_message=one_line(e))
    left = remove_work(facts.work_dir)
    if left:  # it was left without a word, the run's exit 0 (a sweep)
        warned.append(
            f"its work folder {work_root(facts.work_dir)} could not be removed ({left} files "
            "left): these credentials may not delete there; remove it by hand"
        )
    return Assembled(
        frames_out=result.frames_out,
        error_type=result.error_type,
        error_message=result.error_message,
        seconds=time.monotonic() - started,
        warnings=tuple(warned),
        pid=os.getpid(),
    )


@contextlib.contextmanager
def _warnings_into(warned: list[str], logger: str) -> Iterator[None]:
    """Take the warnings ``logger`` itself logs inside the block out of the log and
    append them to ``warned``, as text: the driver says them, each once per run, with the
    output's name (an assembly task's log is a worker's, which the user does not see; an
    assembly in the driver would otherwise say them twice)."""

    def collect(record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        warned.append(record.getMessage())
        return False

    target = logging.getLogger(logger)
    target.addFilter(collect)
    try:
        yield
    finally:
        target.removeFilter(collect)


def _node_id() -> str:
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def _one_table(tables: list) -> object:  # pyarrow Tables
    """The chunks' ``tables`` as one, or a :class:`ModelError` naming the output whose
    per-frame shape or type differs between chunks (pyarrow said "Schema at index 4 was
    different", naming none; a sweep)."""
    import pyarrow as pa

    try:
        return pa.concat_tables(tables)
    except pa.ArrowInvalid:
        first = tables[0].schema
        for table in tables[1:]:
            for field in table.schema:
                if field.name in first.names and first.field(field.name).type != field.type:
                    raise ModelError(
                        f"output {field.name!r} is {_column_type(first.field(field.name).type)} "
                        f"for some frames and {_column_type(field.type)} for others; "
                        + VARYING_ADVICE
                    ) from None
        raise


def _column_type(kind: object) -> str:
    """A table column's type as the model gave it: a per-frame shape and element type."""
    shape = getattr(kind, "shape", None)  # a fixed-shape tensor column's
    value = getattr(kind, "value_type", kind)
    return f"{list(shape)} ({value})" if shape is not None else f"[] ({value})"


def _write_table(facts: VideoFacts) -> int:
    """Concatenate the chunks' tables in chunk order into the video's Parquet output."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [
        pq.read_table(io.BytesIO(storage.read_bytes(uri)))
        for uri in segment_uris(facts)
        if storage.exists(uri)  # a chunk that samples no frame has no table
    ]
    table = _one_table(tables) if tables else pa.table({})
    if facts.provenance:
        tag = {PROVENANCE_TAG: facts.provenance}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **tag})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    parent, _ = storage.split(facts.output)
    storage.makedirs(parent)
    storage.write_bytes(facts.output, sink.getvalue().to_pybytes())
    return int(table.num_rows)


# A task, not an actor: retried when its worker dies (a node lost mid-assembly); the
# staging left by a killed attempt is removed by the next one.
assemble_remote = ray.remote(num_cpus=1, max_retries=3)(assemble_video)
