"""Exact range decode: the frames of one chunk, no more, no fewer.

Seek backward to the chunk's keyframe, decode, drop frames before ``start_pts``, stop after
``n_frames``, and check the count and timestamps against the plan. Demuxers that cannot
seek to exactly that keyframe (the first frame decoded starts after ``start_pts``) are
retried once from the start of the file, which is always correct, only slower.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from raypipe.errors import CorruptVideoError, DecodeError
from raypipe.media.plan import Chunk
from raypipe.media.probe import VideoInfo
from raypipe.media.source import open_input


@dataclass(frozen=True)
class DecodedChunk:
    """A chunk's frames, RGB uint8 ``(n, H, W, 3)``, and their pts ``(n,)`` in display order."""

    frames: np.ndarray
    pts: np.ndarray


class _Overshoot(Exception):
    """The seek landed after the frames we need."""


def decode_chunk(
    info: VideoInfo, chunk: Chunk, *, threads: int = 0, keep: Sequence[int] | None = None
) -> DecodedChunk:
    """Decode exactly ``chunk.n_frames`` frames of ``info.uri`` in ``[start_pts, end_pts)``.

    ``keep``: offsets within the chunk (0-based, display order) of the frames to return;
    the others are still decoded (later frames may reference them) but not converted to
    RGB. ``None`` returns every frame. ``threads`` 0 lets FFmpeg choose. Raises
    :class:`DecodeError` when the decoded frames do not match the plan and
    :class:`CorruptVideoError` when the stream does not decode.
    """
    wanted = None if keep is None else sorted(set(keep))
    try:
        return _decode(info, chunk, chunk.seek_pts, threads, wanted)
    except _Overshoot:
        return _decode(info, chunk, None, threads, wanted)


def _decode(
    info: VideoInfo, chunk: Chunk, seek_pts: int | None, threads: int, keep: list[int] | None
) -> DecodedChunk:
    slot = {offset: i for i, offset in enumerate(keep)} if keep is not None else None
    n_out = chunk.n_frames if keep is None else len(keep)
    frames = np.empty((n_out, info.height, info.width, 3), dtype=np.uint8)
    pts = np.empty(n_out, dtype=np.int64)
    n = 0
    to_rgb = VideoReformatter()  # one swscale context for the whole chunk
    with open_input(info.uri) as container:
        stream = cast(av.VideoStream, container.streams[info.stream_index])
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        try:
            if seek_pts is not None:
                container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                t = frame.pts
                if t is None:
                    raise DecodeError(f"{chunk.chunk_id}: decoded a frame without pts")
                if t < chunk.start_pts:
                    continue
                if t >= chunk.end_pts:
                    break
                if n == 0 and t != chunk.start_pts and seek_pts is not None:
                    raise _Overshoot
                if frame.width != info.width or frame.height != info.height:
                    raise DecodeError(
                        f"{chunk.chunk_id}: frame at pts {t} is {frame.width}x{frame.height}, "
                        f"the stream is {info.width}x{info.height}; resolution changes "
                        "mid-stream are not supported"
                    )
                if n == chunk.n_frames:
                    raise DecodeError(
                        f"{chunk.chunk_id}: more than the planned {chunk.n_frames} frames in "
                        f"[{chunk.start_pts}, {chunk.end_pts})"
                    )
                i = n if slot is None else slot.get(n, -1)
                if i >= 0:
                    frames[i] = to_rgb.reformat(frame, format="rgb24").to_ndarray()
                    pts[i] = t
                n += 1
                if n == chunk.n_frames:
                    break
        except av.error.FFmpegError as e:
            raise CorruptVideoError(
                f"input '{info.uri}' does not decode in chunk {chunk.chunk_id}: {e}"
            ) from e
    if n != chunk.n_frames:
        raise DecodeError(
            f"{chunk.chunk_id}: decoded {n} frames in [{chunk.start_pts}, {chunk.end_pts}), "
            f"the plan expects {chunk.n_frames}; the input is probably damaged"
        )
    if len(pts) > 1 and not np.all(np.diff(pts) > 0):
        raise DecodeError(f"{chunk.chunk_id}: decoded frames are not in display order")
    return DecodedChunk(frames=frames, pts=pts)
