"""Ground-truth readers for tests: plain sequential PyAV and the ffmpeg/ffprobe CLIs.

Deliberately independent of raypipe's own media code (no seeking, no chunking), so tests
can compare raypipe's results with what a straightforward reader sees.
"""

from __future__ import annotations

import os
import subprocess
from fractions import Fraction
from typing import Any, cast

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from raypipe.media import fields
from raypipe.media.colour import frame_side_data
from raypipe.media.picture import turned_upright
from raypipe.media.probe import frame_orientation, stamped_frames
from raypipe.media.rgb import ACCURATE

__all__ = [
    "audio_packet_times",
    "audio_packets",
    "decode_all",
    "decode_upright",
    "first_frame_hdr",
    "psnr",
    "yuv_planes",
    "ffmpeg_decode_errors",
    "ffprobe_frame_count",
    "start_offset_seconds",
]

PathLike = str | os.PathLike[str]


def _rgb(frame: av.VideoFrame, reformatter: Any, rgb_format: str, **colour: Any) -> np.ndarray:
    """``frame`` as RGB by raypipe's documented convention (raypipe/media/rgb.py and
    fields.py): chroma replicated (point on a bare copy of the samples: no chroma siting),
    each field's own in a frame flagged interlaced, every value rounded to the nearest."""

    def convert(bare: av.VideoFrame) -> np.ndarray:
        out = reformatter.reformat(bare, format=rgb_format, interpolation=ACCURATE, **colour)
        return cast(np.ndarray, out.to_ndarray())

    return fields.converted(frame, convert, interlaced=frame.interlaced_frame)


def decode_all(path: PathLike) -> tuple[np.ndarray, list[int], Fraction]:
    """Every frame of the first video stream, decoded from the start, as RGB with the
    frame's own matrix tag (swscale's BT.601 where it has none), converted as
    :func:`_rgb` converts.

    Returns (frames as (n, H, W, 3) uint8 RGB, their pts in display order, the stream's
    time base). A stream without frames gives an array of shape (0, H, W, 3). Raises
    ValueError without a video stream and ``av.error.FFmpegError`` on a decoding error.
    """
    with av.open(os.fspath(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream: expected at least one")
        stream = container.streams.video[0]
        time_base = stream.time_base
        if time_base is None:
            raise ValueError(f"{path}: video stream has no time base")
        images: list[np.ndarray] = []
        pts: list[int] = []
        reformatter = VideoReformatter()
        for frame in stamped_frames(container, stream):
            if frame.pts is None:
                raise ValueError(f"{path}: decoded frame {len(pts)} has no pts")
            images.append(_rgb(frame, reformatter, "rgb24", src_colorspace=frame.colorspace))
            pts.append(frame.pts)
        if images:
            return np.stack(images), pts, Fraction(time_base)
        empty = np.empty((0, stream.height, stream.width, 3), dtype=np.uint8)
        return empty, pts, Fraction(time_base)


_SWS_MATRIX = {
    1: "ITU709",
    4: "FCC",
    5: "ITU601",
    6: "ITU601",
    7: "SMPTE240M",
    9: "BT2020",
    10: "BT2020",
}  # fmt: skip  AVColorSpace value -> swscale


def _deep(frame: av.VideoFrame) -> bool:
    return max(c.bits for c in frame.format.components) > 8


def decode_upright(
    path: PathLike, limit: int | None = None
) -> tuple[np.ndarray, list[int], Fraction]:
    """Every frame of the first video stream (the first ``limit`` in decode output order
    where given) as it is displayed: turned upright by its display matrix, RGB
    ``(n, H, W, 3)``, uint8 for 8-bit streams and uint16 (16 bits per channel) for deeper
    ones.

    YUV is converted with the frame's own matrix and range tags; untagged, with BT.709 when
    the frame is at least 1280 px wide or more than 576 px high, else BT.601, and limited
    range unless the format is ``yuvj*``. Chroma is replicated (swscale's point
    interpolation on a bare copy of the samples, no chroma siting), each field's on its own
    in a frame flagged interlaced, and every value rounded to the nearest: the convention
    raypipe documents (raypipe/media/rgb.py, fields.py), so raypipe's frames compare
    exactly.
    Returns (frames, pts in display order, time base), like :func:`decode_all`.
    """
    from av.video.reformatter import ColorRange, Colorspace

    with av.open(os.fspath(path)) as container:
        stream = next(
            s
            for s in container.streams.video
            if not s.disposition & av.stream.Disposition.attached_pic
        )
        time_base = stream.time_base
        if time_base is None:
            raise ValueError(f"{path}: video stream has no time base")
        images: list[np.ndarray] = []
        pts: list[int] = []
        reformatter = VideoReformatter()
        for frame in stamped_frames(container, stream):
            if frame.pts is None:
                raise ValueError(f"{path}: decoded frame {len(pts)} has no pts")
            hd = frame.width >= 1280 or frame.height > 576
            matrix = Colorspace[_SWS_MATRIX.get(frame.colorspace, "ITU709" if hd else "ITU601")]
            full = frame.color_range == 2 or (
                frame.color_range != 1 and frame.format.name.startswith("yuvj")
            )

            rgb = _rgb(
                frame,
                reformatter,
                "rgb48le" if _deep(frame) else "rgb24",
                src_colorspace=matrix,
                src_color_range=ColorRange.JPEG if full else ColorRange.MPEG,
            )
            images.append(np.ascontiguousarray(turned_upright(rgb, *frame_orientation(frame))))
            pts.append(frame.pts)
            if len(images) == limit:
                break
        return np.stack(images), pts, Fraction(time_base)


def yuv_planes(path: PathLike) -> list[list[np.ndarray]]:
    """The decoded samples of every frame of the first video stream, plane by plane, in
    the stream's own pixel format (uint16 for formats deeper than 8 bits)."""
    out: list[list[np.ndarray]] = []
    with av.open(os.fspath(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            deep = _deep(frame)
            planes = []
            for plane in frame.planes:
                item = 2 if deep else 1
                data = np.frombuffer(bytes(plane), dtype=np.uint16 if deep else np.uint8)
                rows = data.reshape(plane.height, plane.line_size // item)
                planes.append(rows[:, : plane.width].copy())
            out.append(planes)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of ``a`` against ``b`` (same shape and dtype; peak 255 for uint8, 65535
    for uint16); ``inf`` when equal."""
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"cannot compare {a.dtype} {a.shape} with {b.dtype} {b.shape}")
    peak = 65535.0 if a.dtype == np.uint16 else 255.0
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak * peak / mse)


def first_frame_hdr(path: PathLike) -> dict[str, tuple[int, ...]]:
    """HDR10 static metadata of the first video frame, as PyAV's decoder reads it (it
    parses H.264 SEI, which ffprobe 5.1 does not): ``{"mastering": (the 10 rationals' 20
    integers...), "light": (MaxCLL, MaxFALL)}`` with the entries present."""
    import struct

    from av.sidedata.sidedata import Type

    found: dict[str, tuple[int, ...]] = {}
    with av.open(os.fspath(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            for side in frame_side_data(frame):
                data = bytes(side)
                if side.type == Type.MASTERING_DISPLAY_METADATA:
                    v = struct.unpack_from("<22i", data)
                    # rationals reduced, so 34000/50000 and 17/25 compare equal
                    found["mastering"] = tuple(
                        x
                        for i in range(10)
                        for x in Fraction(v[2 * i], v[2 * i + 1] or 1).as_integer_ratio()
                    )
                elif side.type == Type.CONTENT_LIGHT_LEVEL:
                    found["light"] = struct.unpack_from("<2I", data)
            break
    return found


def audio_packet_times(
    path: PathLike,
) -> list[tuple[int, Fraction, Fraction, Fraction, bool]]:
    """(audio stream ordinal, pts, dts, duration, discard) of every non-empty audio packet,
    in file order; times in seconds (``-1`` for a missing pts or dts); ``discard``: the
    demuxer marks the packet's samples to be dropped (encoder priming cut by an edit
    list)."""
    with av.open(os.fspath(path)) as container:
        ordinal = {stream.index: i for i, stream in enumerate(container.streams.audio)}
        if not ordinal:
            return []
        out = []
        for packet in container.demux(*container.streams.audio):
            if packet.size == 0:
                continue
            tb = Fraction(packet.time_base)
            out.append(
                (
                    ordinal[packet.stream.index],
                    Fraction(-1) if packet.pts is None else packet.pts * tb,
                    Fraction(-1) if packet.dts is None else packet.dts * tb,
                    (packet.duration or 0) * tb,
                    bool(packet.is_discard),
                )
            )
        return out


def audio_packets(path: PathLike) -> list[tuple[int, int | None, int | None, bytes]]:
    """(audio stream ordinal, pts, dts, payload) of every non-empty audio packet, in file order.

    The ordinal counts audio streams only (0 for the first audio stream). Nothing is decoded.
    """
    with av.open(os.fspath(path)) as container:
        ordinal = {stream.index: i for i, stream in enumerate(container.streams.audio)}
        if not ordinal:
            return []
        return [
            (ordinal[packet.stream.index], packet.pts, packet.dts, bytes(packet))
            for packet in container.demux(*container.streams.audio)
            if packet.size > 0
        ]


def _start_seconds(stream: av.stream.Stream, container: av.container.InputContainer) -> float:
    """The stream's first presentation time: the demuxer's start time (edit lists and
    encoder priming applied), else the smallest pts among its first packets."""
    time_base = stream.time_base
    if time_base is None:
        raise ValueError(f"stream {stream.index} has no time base")
    if stream.start_time is not None:
        return float(stream.start_time * time_base)
    first: list[int] = []
    for packet in container.demux(stream):
        if packet.pts is not None:
            first.append(packet.pts)
        if len(first) >= 16:  # enough to cover B-frame reordering
            break
    if not first:
        raise ValueError(f"stream {stream.index} has no packet with a pts")
    return float(min(first) * time_base)


def start_offset_seconds(path: PathLike) -> float:
    """Start of the first audio stream minus start of the first video stream, in seconds.

    0.0 when there is no audio. Starts are as the demuxer reports them (``start_time``),
    so AAC priming hidden by an edit list does not count: ``make_clip`` with
    ``audio_offset_seconds=0`` reads 0.0; with an offset, mp4 rounds it to whole ms and
    the 1024 priming samples show (about 21 ms earlier).
    """
    with av.open(os.fspath(path)) as container:
        if not container.streams.audio:
            return 0.0
        if not container.streams.video:
            raise ValueError(f"{path}: has audio but no video stream")
        video_start = _start_seconds(container.streams.video[0], container)
    with av.open(os.fspath(path)) as container:  # fresh demux position for the audio
        audio_start = _start_seconds(container.streams.audio[0], container)
    return audio_start - video_start


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)


def subtitle_cues(path: PathLike, index: int) -> list[tuple[Fraction, Fraction, str]]:
    """Stream ``index``'s cues as ffmpeg reads them: (start s, end s, text) each, from its
    SubRip rendering (times to the millisecond, as the file has them: ``-copyts``). Raises
    RuntimeError when ffmpeg cannot read the stream."""
    args = ["ffmpeg", "-v", "error", "-copyts", "-i", os.fspath(path), "-map", f"0:{index}"]
    result = _run([*args, "-f", "srt", "-"])
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg read no cues from {path} stream {index}: {result.stderr}")

    def seconds(stamp: str) -> Fraction:
        h, m, rest = stamp.strip().split(":")
        s, ms = rest.split(",")
        return Fraction(int(ms), 1000) + int(s) + 60 * int(m) + 3600 * int(h)

    cues: list[tuple[Fraction, Fraction, str]] = []
    for block in filter(None, result.stdout.strip().split("\n\n")):
        lines = block.strip().splitlines()
        start, end = lines[1].split(" --> ")
        cues.append((seconds(start), seconds(end), "\n".join(lines[2:])))
    return cues


def ffprobe_frame_count(path: PathLike) -> int:
    """Frames of the first video stream as ffprobe counts them by decoding (``-count_frames``).

    ffprobe prints "N/A" when it decoded no frame; that reads as 0. Raises RuntimeError when
    ffprobe fails or finds no video stream.
    """
    args = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames"]
    args += ["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", os.fspath(path)]
    result = _run(args)
    text = result.stdout.strip()
    if result.returncode != 0 or not text:
        raise RuntimeError(
            f"ffprobe found no video frame count in {path} (exit {result.returncode}): "
            f"{result.stderr.strip() or 'no video stream'}"
        )
    return 0 if text == "N/A" else int(text.splitlines()[0].strip().rstrip(","))


def ffmpeg_decode_errors(path: PathLike) -> str:
    """stderr of ``ffmpeg -v error -i PATH -f null -``: "" when every stream decodes cleanly."""
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-i", os.fspath(path),
            "-f", "null", "-"]  # fmt: skip
    result = _run(args)
    errors = result.stderr.strip()
    if result.returncode != 0 and not errors:
        return f"ffmpeg exited with status {result.returncode}"
    return errors
