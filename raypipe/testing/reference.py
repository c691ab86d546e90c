"""Ground-truth readers for tests: plain sequential PyAV and the ffmpeg/ffprobe CLIs.

Deliberately independent of raypipe's own media code (no seeking, no chunking), so tests
can compare raypipe's results with what a straightforward reader sees.
"""

from __future__ import annotations

import os
import subprocess
from fractions import Fraction

import av
import numpy as np

__all__ = [
    "audio_packets",
    "decode_all",
    "ffmpeg_decode_errors",
    "ffprobe_frame_count",
    "start_offset_seconds",
]

PathLike = str | os.PathLike[str]


def decode_all(path: PathLike) -> tuple[np.ndarray, list[int], Fraction]:
    """Every frame of the first video stream, decoded from the start.

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
        for frame in container.decode(stream):
            if frame.pts is None:
                raise ValueError(f"{path}: decoded frame {len(pts)} has no pts")
            images.append(frame.to_ndarray(format="rgb24"))
            pts.append(frame.pts)
        if images:
            return np.stack(images), pts, Fraction(time_base)
        empty = np.empty((0, stream.height, stream.width, 3), dtype=np.uint8)
        return empty, pts, Fraction(time_base)


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
