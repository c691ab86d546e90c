"""The per-row stage functions Ray Data runs: plan (video → chunk rows), decode and encode.

One row is one chunk from decode to encode. These are thin wrappers over
:mod:`raypipe.media` that add timing and placement stats to the row; tests call them
without Ray. For a temporal model a row also carries its chunk's context (``context``, the
frames decoded around it: :class:`~raypipe.media.plan.Context`) and ``interpolate``: decode
adds the context frames, inference returns the chunk's own frames and pts
(:func:`own_pts`), and encode gives an interpolated chunk its doubled timing
(:func:`raypipe.media.retime.doubled_timing`). A stage never raises for a bad input: it
turns the error into the row's ``error_type``/``error_message`` and later stages pass such
rows through untouched, so one corrupt video fails alone and the rest of an archive
finishes.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from raypipe import faults
from raypipe.config import EncodeConfig
from raypipe.distributed.chunk_task import (
    RUN_DIR_PREFIX,
    RUN_FILE,
    ChunkTask,
    Row,
    context_of,
    is_work,
    output_of,
    remove_work,
    work_root,
)
from raypipe.errors import EncodeError, StorageError, one_line
from raypipe.media.decode import decode_chunk
from raypipe.media.encode import encode_segment
from raypipe.media.plan import Chunk
from raypipe.media.probe import VideoInfo
from raypipe.media.retime import doubled_timing
from raypipe.media.source import is_local
from raypipe.media.yuv import YuvRule
from raypipe.recycle import RecycledArrays, keep_freed_memory

EMPTY_FRAMES = np.zeros((0, 1, 1, 3), dtype=np.uint8)
EMPTY_PTS = np.zeros(0, dtype=np.int64)

TASK_CPUS = 1
"""CPUs a decode or an encode task reserves; its decoder or encoder runs as many threads
(``threads=TASK_CPUS``), so tasks side by side share the cores instead of each starting a
thread per core of the node."""


CARRY_SWITCH = "RAYPIPE_DECODE_CARRY"
"""Environment variable: ``0`` in a decode task's process makes every chunk open and seek
its input afresh instead of going on with the decoder the process's last chunk left
(:func:`decode_stage`), for side-by-side measurements (benchmarks/README.md)."""


_DECODED = RecycledArrays()
"""The array a task process decoded its last chunk into, written again by its next decode
once Ray has copied the frames out and nothing holds it (:mod:`raypipe.recycle`): a 720p
chunk of 60 frames is 166 MB, which the process would otherwise take new from the kernel,
page by page, for every chunk. A worker keeps one chunk's frames between tasks."""


def error_fields(e: BaseException) -> dict[str, str]:
    """The row fields that carry an error: its type name and a one-line message."""
    return {"error_type": type(e).__name__, "error_message": one_line(e)}


def chunk_row(
    info: VideoInfo,
    chunk: Chunk,
    *,
    first_index: int = 0,
    keep: list[int] | None = None,
    work_dir: str = "",
    interpolate: int = 1,
) -> Row:
    """The row that enters the pipeline for ``chunk`` of ``info``: its
    :class:`~raypipe.distributed.chunk_task.ChunkTask` (see there for the arguments)."""
    return ChunkTask.of(
        info, chunk, first_index=first_index, keep=keep, work_dir=work_dir, interpolate=interpolate
    ).to_row()


def context_counts(row: Row) -> tuple[int, int]:
    """Context frames (before, after) a decoded row carries around its chunk's frames."""
    context = context_of(row)
    return (0, 0) if context is None else (context.before, context.after)


def own_pts(pts: np.ndarray, before: int, after: int) -> np.ndarray:
    """The chunk's own pts of a decoded row's ``pts``: without its context frames'."""
    return np.asarray(pts)[before : len(pts) - after]


def tensor_table_bytes(row: Row, pts: np.ndarray, outputs: dict[str, np.ndarray]) -> bytes:
    """One chunk's analysis results as Parquet: one row per processed frame with the video
    URI, frame index, pts and pts seconds, and one column per model output (its per-frame
    shape kept as a fixed-shape tensor column, plain values for scalars).

    The video id is not a column: it is the table's hive partition (``video_id=ID/``, see
    :func:`raypipe.distributed.pipeline.table_output`), so pandas, pyarrow datasets and Ray
    Data read the output folder as one table with ``video_id`` from the path (a column
    too would clash with the partition's type); one file alone keeps ``video_uri``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    task = ChunkTask.from_row(row)
    tb = task.time_base
    n = len(pts)
    columns: dict[str, Any] = {
        "video_uri": pa.array([task.uri] * n, pa.string()),
        "frame_index": pa.array(task.frame_indices(), pa.int64()),
        "pts": pa.array(np.asarray(pts, dtype=np.int64), pa.int64()),
        "pts_seconds": pa.array([float(p * tb) for p in pts], pa.float64()),
    }
    for name, values in outputs.items():
        values = np.ascontiguousarray(values)
        if values.ndim == 1:
            columns[name] = pa.array(values)
        else:
            columns[name] = pa.FixedShapeTensorArray.from_numpy_ndarray(values)
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink)
    return bytes(sink.getvalue().to_pybytes())


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # noqa: BLE001 - stats only
        return ""


def decode_stage(
    row: Row, *, decoder: str = "cpu", threads: int = 0, handoff: YuvRule | None = None
) -> Row:
    """Decode the chunk's frames: adds ``frames`` (n,H,W,3) upright RGB, uint8 (uint16 for
    sources deeper than 8 bits) and ``pts`` (n,) int64,
    ``decoder`` (the one that ran: ``nvdec`` or ``cpu``) and ``decoder_note`` (why NVDEC
    did not, when ``decoder`` asked for it). ``threads``: the decoder's (the CPUs the task
    holds; 0: FFmpeg's choice). ``decode_cpu_s``: the CPU seconds of the stage's process
    while it ran. ``handoff``: the run's YUV hand-off rule; ``handoff`` (``yuv``: the
    frames are packed YUV ``(n, H * W * 3 / 2)``, or ``rgb``) and ``handoff_note`` (why
    the rule's chunk went as RGB) say what it did. ``decode_carried``: the chunk went on
    with the decoder this process's previous chunk left open (the chunk after it in the
    same video: no seek, no frames decoded again before it; :func:`decode_chunk`'s
    ``carry``). ``resize_note``: that frames came in another size than the stream's and
    were scaled to it (a broadcast recording's ads), else ``""``."""
    keep_freed_memory()
    start, cpu = time.time(), time.process_time()
    out: Row = {
        **row,
        "frames": EMPTY_FRAMES,
        "pts": EMPTY_PTS,
        "decoder": "",
        "decoder_note": "",
        "handoff": "",
        "handoff_note": "",
        "resize_note": "",
        "decode_carried": False,
    }
    if is_work(row):
        task = ChunkTask.from_row(row)
        faults.checkpoint("decode", task.chunk_id, node=_node_id())
        try:
            keep = None if task.keep is None else list(task.keep)
            decoded = decode_chunk(
                task.source(),
                task.chunk,
                keep=keep,
                decoder=decoder,
                threads=threads,
                allocate=_DECODED.empty,
                handoff=handoff,
                carry=os.environ.get(CARRY_SWITCH) != "0",
            )
            out.update(
                decode_carried=decoded.carried,
                frames=decoded.frames,
                pts=decoded.pts,
                decoder=decoded.decoder,
                decoder_note=decoded.note,
                handoff=decoded.handoff,
                handoff_note=decoded.handoff_note,
                resize_note=decoded.resize_note,
            )
        except Exception as e:  # noqa: BLE001 - becomes the video's typed error row
            out.update(error_fields(e))
    out.update(
        decode_node=_node_id(),
        decode_pid=os.getpid(),
        decode_start=start,
        decode_s=time.time() - start,
        decode_cpu_s=time.process_time() - cpu,
    )
    return out


def decode_batch(
    batch: dict[str, np.ndarray],
    *,
    decoder: str = "cpu",
    threads: int = 0,
    handoff: YuvRule | None = None,
) -> dict[str, np.ndarray]:
    """:func:`decode_stage` over a one-row numpy batch (Ray Data's ``map_batches`` with
    ``batch_size=1``), the pipeline's decode step: the frames leave as the batch's
    ``(1, n, H, W, 3)`` column, a view of the decoded array, which Ray Data hands to the
    object store as it is. (A row-based ``map`` stacks each row's arrays into a new one:
    a copy of every frame, into memory the process had not touched.)"""
    if len(batch["chunk_id"]) != 1:
        raise ValueError(f"decode takes one chunk per batch, got {len(batch['chunk_id'])}")
    row = {k: v[0] for k, v in batch.items()}
    out = decode_stage(row, decoder=decoder, threads=threads, handoff=handoff)
    return {k: v[None] if isinstance(v, np.ndarray) else np.array([v]) for k, v in out.items()}


def encode_stage(row: Row, *, config: EncodeConfig, threads: int = 0) -> Row:
    """Encode the processed frames into a segment and write it to the video's work
    directory (:attr:`ChunkTask.segment_uri`); the row leaves with no frames or bytes in
    it, only the segment's size. ``threads``: the encoder's (the CPUs the task holds; 0:
    the encoder's choice)."""
    keep_freed_memory()
    start, cpu = time.time(), time.process_time()
    out = {k: v for k, v in row.items() if k not in ("frames", "pts")}
    frames = row["frames"]
    out.update(segment_bytes=0, out_width=0, out_height=0)
    if is_work(row):
        task = ChunkTask.from_row(row)
        config = config.for_output(output_of(task.work_dir))  # codec "auto": the container's
        faults.checkpoint("encode", task.chunk_id, node=_node_id())
        try:
            pts = np.asarray(row["pts"])
            time_base, rate = task.time_base, task.rate
            end_pts = task.chunk.end_pts if task.chunk.n_frames == len(pts) else None
            if task.interpolate == 2 and end_pts is not None:
                pts, end_pts, time_base = doubled_timing(pts, end_pts, time_base)
                rate *= 2
            if len(frames) != len(pts):  # the encoder would drop or repeat times silently
                raise EncodeError(
                    f"chunk {task.chunk.index} reached the encoder with {len(frames)} frames "
                    f"for its {len(pts)} frame times; a step between raypipe.data's "
                    "map_processor and write_videos must keep each chunk's frames: as many "
                    "as it got, in order"
                )
            segment = encode_segment(
                frames,
                pts,
                time_base=time_base,
                rate=rate,
                config=config,
                picture=task.picture,
                end_pts=end_pts,
                threads=threads,
                frame_ticks=task.frame_ticks,  # 1 for an interpolating model's output
            )
            out.update(
                segment_bytes=_store(task, segment.to_bytes()),
                out_width=int(frames.shape[2]),
                out_height=int(frames.shape[1]),
            )
        except Exception as e:  # noqa: BLE001 - becomes the video's typed error row
            out.update(error_fields(e))
    out.update(
        encode_node=_node_id(),
        encode_pid=os.getpid(),
        encode_start=start,
        encode_s=time.time() - start,
        encode_cpu_s=time.process_time() - cpu,
    )
    return out


def _store(task: ChunkTask, data: bytes, *, video: bool = True) -> int:
    """Write a chunk's segment to its work directory, atomically; returns its size.
    A video's output folder must still be there (an analysis table's partition folder is
    made with its work directory: ``video`` false).

    A run's folder (:data:`RUN_DIR_PREFIX`) whose record is gone once the segment is
    written was removed while this chunk was being made, by its run, which stopped
    (failed, interrupted), or by a later run on the same output with other settings: the
    segment, and the folder it made again, are removed, and the chunk fails. A library
    caller's stopped run left such late segments for good (its Ray stays up, the actors
    finish their chunk; a sweep)."""
    from raypipe import storage

    beside = storage.split(work_root(task.work_dir))[0]  # the output's folder
    # removed: not made again (it was, with every folder above it, left behind; a sweep)
    if video and is_local(beside) and not storage.exists(beside):
        raise StorageError(
            f"the output's folder {beside} was removed while chunk {task.chunk.index} was "
            "being made; its segment was not kept"
        )
    storage.makedirs(task.work_dir)  # (a no-op on object stores)
    storage.write_bytes(task.segment_uri, data)
    if storage.split(task.work_dir)[1].startswith(RUN_DIR_PREFIX) and not storage.exists(
        storage.join(task.work_dir, RUN_FILE)
    ):
        remove_work(task.work_dir)
        raise StorageError(
            f"the work folder {task.work_dir} was removed while chunk {task.chunk.index} was "
            "being made (the run stopped, or a run with other settings on the same output "
            "took the output over); its segment was not kept"
        )
    return len(data)


def store_stage(row: Row) -> Row:
    """Analysis runs: write the chunk's table (the actor's Parquet bytes in ``segment``) to
    the work directory; the row leaves with only the table's size."""
    start, cpu = time.time(), time.process_time()
    out = {k: v for k, v in row.items() if k != "segment"}
    out["segment_bytes"] = 0
    if is_work(row):
        try:
            out["segment_bytes"] = _store(
                ChunkTask.from_row(row), bytes(row["segment"]), video=False
            )
        except Exception as e:  # noqa: BLE001 - becomes the video's typed error row
            out.update(error_fields(e))
    out.update(  # the fields of every chunk's record, as the encode's (the report's lanes)
        encode_node=_node_id(),
        encode_pid=os.getpid(),
        encode_start=start,
        encode_s=time.time() - start,
        encode_cpu_s=time.process_time() - cpu,
    )
    return out
