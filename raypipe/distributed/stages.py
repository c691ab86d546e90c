"""The per-row stage functions Ray Data runs: decode (CPU task) and encode (CPU task).

One row is one chunk from decode to encode. These are thin wrappers over
:mod:`raypipe.media` that add timing and placement stats to the row; tests call them
without Ray.
"""

from __future__ import annotations

import os
import time
from fractions import Fraction
from typing import Any

from raypipe.config import EncodeConfig
from raypipe.media.decode import decode_chunk
from raypipe.media.encode import encode_segment
from raypipe.media.plan import Chunk
from raypipe.media.probe import VideoInfo

Row = dict[str, Any]


def chunk_row(info: VideoInfo, chunk: Chunk) -> Row:
    """The plain-data row that enters the pipeline for ``chunk`` of ``info``."""
    return {
        "chunk_id": chunk.chunk_id,
        "video_id": chunk.video_id,
        "index": chunk.index,
        "start_pts": chunk.start_pts,
        "end_pts": chunk.end_pts,
        "n_frames": chunk.n_frames,
        "seek_pts": -1 if chunk.seek_pts is None else chunk.seek_pts,
        "uri": info.uri,
        "stream_index": info.stream_index,
        "width": info.width,
        "height": info.height,
        "tb_num": info.time_base_num,
        "tb_den": info.time_base_den,
        "rate_num": info.rate_num,
        "rate_den": info.rate_den,
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
    )


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # noqa: BLE001 - stats only
        return ""


def decode_stage(row: Row) -> Row:
    """Decode the chunk's frames: adds ``frames`` (n,H,W,3) uint8 and ``pts`` (n,) int64."""
    start = time.time()
    decoded = decode_chunk(_info_of(row), _chunk_of(row))
    end = time.time()
    return {
        **row,
        "frames": decoded.frames,
        "pts": decoded.pts,
        "decode_node": _node_id(),
        "decode_pid": os.getpid(),
        "decode_start": start,
        "decode_s": end - start,
    }


def encode_stage(row: Row, *, config: EncodeConfig) -> Row:
    """Encode the processed frames into a segment; the row leaves with no frames in it."""
    start = time.time()
    segment = encode_segment(
        row["frames"],
        row["pts"],
        time_base=Fraction(int(row["tb_num"]), int(row["tb_den"])),
        rate=Fraction(int(row["rate_num"]), int(row["rate_den"]))
        if int(row["rate_num"])
        else Fraction(0),
        config=config,
    )
    end = time.time()
    out = {k: v for k, v in row.items() if k not in ("frames", "pts")}
    out.update(
        segment=segment.to_bytes(),
        out_width=int(row["frames"].shape[2]),
        out_height=int(row["frames"].shape[1]),
        encode_node=_node_id(),
        encode_pid=os.getpid(),
        encode_start=start,
        encode_s=end - start,
    )
    return out
