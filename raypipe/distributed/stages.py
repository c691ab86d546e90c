"""The per-row stage functions Ray Data runs: plan (video → chunk rows), decode and encode.

One row is one chunk from decode to encode. These are thin wrappers over
:mod:`raypipe.media` that add timing and placement stats to the row; tests call them
without Ray. A stage never raises for a bad input: it turns the error into the row's
``error_type``/``error_message`` and later stages pass such rows through untouched, so
one corrupt video fails alone and the rest of an archive finishes.
"""

from __future__ import annotations

import os
import time
from fractions import Fraction
from typing import Any

import numpy as np

from raypipe import faults
from raypipe.config import EncodeConfig
from raypipe.media.decode import decode_chunk
from raypipe.media.encode import encode_segment
from raypipe.media.picture import PictureFormat
from raypipe.media.plan import Chunk
from raypipe.media.probe import VideoInfo

Row = dict[str, Any]

EMPTY_FRAMES = np.zeros((0, 1, 1, 3), dtype=np.uint8)
EMPTY_PTS = np.zeros(0, dtype=np.int64)

TASK_CPUS = 1
"""CPUs a decode or an encode task reserves; its decoder or encoder runs as many threads
(``threads=TASK_CPUS``), so tasks side by side share the cores instead of each starting a
thread per core of the node."""


def error_fields(e: BaseException) -> dict[str, str]:
    """The row fields that carry an error: its type name and a one-line message."""
    return {"error_type": type(e).__name__, "error_message": " ".join(str(e).split())}


def chunk_row(
    info: VideoInfo, chunk: Chunk, *, first_index: int = 0, keep: list[int] | None = None
) -> Row:
    """The plain-data row that enters the pipeline for ``chunk`` of ``info``.

    ``first_index``: display index of the chunk's first frame in the video; ``keep``: the
    offsets of the frames to process (analysis sampling), ``None`` for all. ``picture``:
    the source's :class:`~raypipe.media.picture.PictureFormat` as JSON (rotation, colour
    tags, pixel format, HDR metadata) that decode and encode convert and tag with.
    """
    return {
        "first_index": first_index,
        "keep": "" if keep is None else ",".join(map(str, keep)),
        "chunk_id": chunk.chunk_id,
        "video_id": chunk.video_id,
        "index": chunk.index,
        "start_pts": chunk.start_pts,
        "end_pts": chunk.end_pts,
        "n_frames": chunk.n_frames,
        "seek_pts": -1 if chunk.seek_pts is None else chunk.seek_pts,
        "last_pts": chunk.last_pts,
        "uri": info.uri,
        "stream_index": info.stream_index,
        "width": info.width,
        "height": info.height,
        "tb_num": info.time_base_num,
        "tb_den": info.time_base_den,
        "rate_num": info.rate_num,
        "rate_den": info.rate_den,
        "picture": info.picture_format.to_json(),
        "error_type": "",
        "error_message": "",
    }


def _chunk_of(row: Row) -> Chunk:
    seek = int(row["seek_pts"])
    return Chunk(
        video_id=str(row["video_id"]),
        index=int(row["index"]),
        start_pts=int(row["start_pts"]),
        end_pts=int(row["end_pts"]),
        n_frames=int(row["n_frames"]),
        seek_pts=None if seek < 0 else seek,
        last_pts=int(row["last_pts"]),
    )


def _info_of(row: Row) -> VideoInfo:
    return VideoInfo(
        uri=str(row["uri"]),
        video_id=str(row["video_id"]),
        format_name="",
        codec="",
        stream_index=int(row["stream_index"]),
        width=int(row["width"]),
        height=int(row["height"]),
        pix_fmt=None,
        time_base_num=int(row["tb_num"]),
        time_base_den=int(row["tb_den"]),
        rate_num=int(row["rate_num"]),
        rate_den=int(row["rate_den"]),
        rotation_degrees=0,
        pts=(),
        keyframe_pts=(),
        picture=picture_of(row),
    )


def picture_of(row: Row) -> PictureFormat:
    """The source's picture facts a row carries."""
    return PictureFormat.from_json(str(row["picture"]))


def keep_of(row: Row) -> list[int] | None:
    """The offsets a row's ``keep`` field names (``None``: every frame)."""
    text = str(row["keep"])
    return [int(k) for k in text.split(",")] if text else None


def frame_indices(row: Row) -> np.ndarray:
    """Display indices (in the video) of the frames a decoded row carries."""
    keep = keep_of(row)
    offsets = np.arange(int(row["n_frames"])) if keep is None else np.asarray(keep)
    return (int(row["first_index"]) + offsets).astype(np.int64)


def tensor_table_bytes(row: Row, pts: np.ndarray, outputs: dict[str, np.ndarray]) -> bytes:
    """One chunk's analysis results as Parquet: one row per processed frame with the video
    URI and id, frame index, pts and pts seconds, and one column per model output (its
    per-frame shape kept as a fixed-shape tensor column, plain values for scalars)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tb = Fraction(int(row["tb_num"]), int(row["tb_den"]))
    n = len(pts)
    columns: dict[str, Any] = {
        "video_uri": pa.array([str(row["uri"])] * n, pa.string()),
        "video_id": pa.array([str(row["video_id"])] * n, pa.string()),
        "frame_index": pa.array(frame_indices(row), pa.int64()),
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


def decode_stage(row: Row, *, decoder: str = "cpu", threads: int = 0) -> Row:
    """Decode the chunk's frames: adds ``frames`` (n,H,W,3) upright RGB, uint8 (uint16 for
    sources deeper than 8 bits) and ``pts`` (n,) int64,
    ``decoder`` (the one that ran: ``nvdec`` or ``cpu``) and ``decoder_note`` (why NVDEC
    did not, when ``decoder`` asked for it). ``threads``: the decoder's (the CPUs the task
    holds; 0: FFmpeg's choice). ``decode_cpu_s``: the CPU seconds of the stage's process
    while it ran."""
    start, cpu = time.time(), time.process_time()
    out: Row = {**row, "frames": EMPTY_FRAMES, "pts": EMPTY_PTS, "decoder": "", "decoder_note": ""}
    if not row["error_type"]:
        faults.checkpoint("decode", str(row["chunk_id"]), node=_node_id())
        try:
            decoded = decode_chunk(
                _info_of(row), _chunk_of(row), keep=keep_of(row), decoder=decoder, threads=threads
            )
            out.update(
                frames=decoded.frames,
                pts=decoded.pts,
                decoder=decoded.decoder,
                decoder_note=decoded.note,
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


def encode_stage(row: Row, *, config: EncodeConfig, threads: int = 0) -> Row:
    """Encode the processed frames into a segment; the row leaves with no frames in it.
    ``threads``: the encoder's (the CPUs the task holds; 0: the encoder's choice)."""
    start, cpu = time.time(), time.process_time()
    out = {k: v for k, v in row.items() if k not in ("frames", "pts")}
    frames = row["frames"]
    out.update(segment=b"", out_width=0, out_height=0)
    if not row["error_type"]:
        faults.checkpoint("encode", str(row["chunk_id"]), node=_node_id())
        try:
            segment = encode_segment(
                frames,
                row["pts"],
                time_base=Fraction(int(row["tb_num"]), int(row["tb_den"])),
                rate=Fraction(int(row["rate_num"]), int(row["rate_den"]))
                if int(row["rate_num"])
                else Fraction(0),
                config=config,
                picture=picture_of(row),
                end_pts=int(row["end_pts"]) if int(row["n_frames"]) == len(row["pts"]) else None,
                threads=threads,
            )
            out.update(
                segment=segment.to_bytes(),
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
