"""Broken and odd media files, for tests of how bulk processing reports bad inputs.

Each writer returns the path it wrote. Writers that take a ``source`` clip generate a
default one (:func:`~raypipe.testing.media.make_clip` with ``ClipSpec()``) when given None.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from fractions import Fraction

import av
import numpy as np

from raypipe.testing.media import (
    _DEFAULT_SPEC,
    AUDIO_SAMPLE_RATE,
    ClipSpec,
    _add_audio,
    _add_video,
    _audio_frames,
    frame_pattern,
    make_clip,
)

__all__ = [
    "TRUNCATED_HEADER_BYTES",
    "TRUNCATED_TAIL_FRACTION",
    "write_audio_only",
    "write_corrupt_packets",
    "write_edit_list",
    "write_empty_file",
    "write_out_of_order_pts",
    "write_resolution_change",
    "write_text_as_video",
    "write_truncated_header",
    "write_truncated_tail",
    "write_unknown_codec",
    "write_zero_frames",
]

TRUNCATED_HEADER_BYTES = 200
"""Bytes kept by :func:`write_truncated_header`."""
TRUNCATED_TAIL_FRACTION = 0.6
"""Share of the source's bytes kept by :func:`write_truncated_tail`."""
_MP4_SUFFIXES = (".mp4", ".mov", ".m4v", ".m4a")

PathLike = str | os.PathLike[str]


def _top_level_boxes(data: bytes) -> dict[str, tuple[int, int]]:
    """ISO-BMFF top-level boxes: type -> [start, end) byte range of the first of each."""
    boxes: dict[str, tuple[int, int]] = {}
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8].decode("latin-1")
        if size == 1:  # 64-bit size follows the type
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        elif size == 0:  # box runs to the end of the file
            size = len(data) - pos
        if size < 8:
            break
        boxes.setdefault(kind, (pos, min(pos + size, len(data))))
        pos += size
    return boxes


def _source_bytes(source: PathLike | None, suffix: str, *, faststart: bool = False) -> bytes:
    """Bytes of ``source``, or of a default clip written with ``suffix``."""
    if source is not None:
        return pathlib.Path(source).read_bytes()
    with tempfile.TemporaryDirectory(prefix="raypipe-bad-") as tmp:
        return make_clip(pathlib.Path(tmp) / f"source{suffix}", faststart=faststart).read_bytes()


def write_empty_file(path: PathLike) -> pathlib.Path:
    """A zero-byte file (``av.open`` raises)."""
    path = pathlib.Path(path)
    path.write_bytes(b"")
    return path


def write_text_as_video(path: PathLike) -> pathlib.Path:
    """A plain text file under a video name such as ``notes.mp4`` (``av.open`` raises)."""
    path = pathlib.Path(path)
    path.write_text("This is not a video.\n" * 20, encoding="utf-8")
    return path


def write_truncated_header(path: PathLike, source: PathLike | None = None) -> pathlib.Path:
    """The first 200 bytes of an mp4 whose moov box comes after its mdat (``av.open`` raises).

    Raises ValueError if ``source`` is not such an mp4 (its 200 bytes would still open).
    """
    data = _source_bytes(source, ".mp4")
    boxes = _top_level_boxes(data)
    if "moov" not in boxes or "mdat" not in boxes or boxes["moov"][0] < boxes["mdat"][0]:
        raise ValueError(
            f"source {source} has top-level boxes {sorted(boxes)}: expected an mp4 with "
            "'moov' after 'mdat' (written without faststart)"
        )
    path = pathlib.Path(path)
    path.write_bytes(data[:TRUNCATED_HEADER_BYTES])
    return path


def write_corrupt_packets(
    path: PathLike, source: PathLike | None = None, *, seed: int = 0
) -> pathlib.Path:
    """An mp4/mov whose mdat bytes in [40%, 60%) of the box are garbage.

    It opens, but decoding that stretch logs errors (see ``reference.ffmpeg_decode_errors``).
    """
    data = bytearray(_source_bytes(source, ".mp4"))
    boxes = _top_level_boxes(bytes(data))
    if "mdat" not in boxes:
        raise ValueError(
            f"source {source} has top-level boxes {sorted(boxes)}: expected an mp4/mov "
            "with an 'mdat' box"
        )
    start, end = boxes["mdat"]
    lo, hi = start + 8 + (end - start) * 2 // 5, start + (end - start) * 3 // 5
    data[lo:hi] = np.random.default_rng(seed).integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    path = pathlib.Path(path)
    path.write_bytes(bytes(data))
    return path


def write_audio_only(
    path: PathLike, codec: str = "aac", duration_seconds: float = 1.0
) -> pathlib.Path:
    """A file (e.g. ``.m4a`` or ``.mp4``) with one stereo audio stream and no video."""
    path = pathlib.Path(path)
    out = av.open(str(path), "w")
    try:
        stream = _add_audio(out, codec)
        frames = _audio_frames(
            stream.codec_context.format.name, 0, round(duration_seconds * AUDIO_SAMPLE_RATE)
        )
        for _, frame in frames:
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    finally:
        out.close()
    return path


def write_zero_frames(path: PathLike, spec: ClipSpec = _DEFAULT_SPEC) -> pathlib.Path:
    """An mp4/mov with an H.264 video stream (``spec``'s size and rate) but no frames.

    Written as a fragmented file with an empty moov: a plain mp4 drops tracks without
    samples and an mkv without clusters does not open, so only mp4/mov suffixes work.
    ``av.open`` succeeds and decoding yields nothing; ffprobe counts no frames ("N/A").
    """
    path = pathlib.Path(path)
    if path.suffix.lower() not in _MP4_SUFFIXES:
        raise ValueError(
            f"zero-frame file {path.name}: expected one of the suffixes {_MP4_SUFFIXES}"
        )
    out = av.open(str(path), "w", options={"movflags": "frag_keyframe+empty_moov"})
    try:
        _add_video(out, spec)
        out.start_encoding()  # writes the header; no frame is ever encoded
    finally:
        out.close()
    return path


def write_truncated_tail(path: PathLike, source: PathLike | None = None) -> pathlib.Path:
    """The first 60% of the bytes of a clip whose index comes first (faststart mp4, mkv).

    Opens, then decoding stops early with errors. Without ``source``, writes a default clip
    with ``path``'s suffix first. Raises ValueError for an mp4/mov whose moov comes last.
    """
    path = pathlib.Path(path)
    data = _source_bytes(source, path.suffix, faststart=True)
    boxes = _top_level_boxes(data)
    if "moov" in boxes and "mdat" in boxes and boxes["moov"][0] > boxes["mdat"][0]:
        raise ValueError(
            f"source {source} keeps its moov box after mdat: expected a faststart "
            "mp4/mov (or an mkv) so that the cut file still opens"
        )
    path.write_bytes(data[: int(len(data) * TRUNCATED_TAIL_FRACTION)])
    return path


_TB = Fraction(1, 25)


def _h264_packets(
    width: int, height: int, n_frames: int, first: int = 0
) -> tuple[bytes | None, list[av.Packet]]:
    """(extradata, packets) of ``n_frames`` pattern frames from ``first`` on, no B-frames
    (so a decoder gives frames in packet order), a keyframe every 4 frames."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = width, height, "yuv420p", _TB
    ctx.options = {"x264-params": "keyint=4:min-keyint=4:scenecut=0:bframes=0"}
    ctx.open()
    packets: list[av.Packet] = []
    for i in range(first, first + n_frames):
        frame = av.VideoFrame.from_ndarray(frame_pattern(i, width, height), format="rgb24")
        frame.pts, frame.time_base = i, _TB
        packets += ctx.encode(frame)
    packets += ctx.encode(None)
    return ctx.extradata, packets


def write_out_of_order_pts(path: PathLike, n_frames: int = 8) -> pathlib.Path:
    """A Matroska file whose frames' timestamps are swapped in pairs (1 <-> 2, 5 <-> 6) with
    no B-frames: a decoder shows them in file order, which is not display order."""
    path = pathlib.Path(path)
    extradata, packets = _h264_packets(96, 64, n_frames)
    order = list(range(n_frames))
    for a in range(1, n_frames - 1, 4):
        order[a], order[a + 1] = order[a + 1], order[a]
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("h264", rate=25)
        stream.width, stream.height, stream.pix_fmt, stream.time_base = 96, 64, "yuv420p", _TB
        stream.codec_context.extradata = extradata
        for packet, pts in zip(packets, order):
            packet.stream, packet.time_base, packet.pts, packet.dts = stream, _TB, pts, None
            out.mux(packet)
    return path


def write_resolution_change(path: PathLike, n_frames: int = 8) -> pathlib.Path:
    """An MPEG-TS file whose H.264 stream is 96x64 for ``n_frames`` frames, then 128x64 for
    as many (two encodes back to back; the new size comes with the second one's SPS), as a
    broadcast recording's ads change size. Not bad: the later frames are scaled."""
    path = pathlib.Path(path)
    _, first = _h264_packets(96, 64, n_frames)
    _, second = _h264_packets(128, 64, n_frames, first=n_frames)
    with av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("h264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for packet in first + second:
            packet.stream, packet.time_base = stream, _TB
            out.mux(packet)
    return path


def write_unknown_codec(path: PathLike) -> pathlib.Path:
    """An AVI whose video stream's codec tag names no codec FFmpeg knows (an MJPEG clip
    with its fourcc replaced), as old or exotic capture files have."""
    path = pathlib.Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        spec = ClipSpec(n_frames=4, codec="mjpeg", pix_fmt="yuvj420p", bframes=0)
        data = make_clip(pathlib.Path(tmp) / "mjpeg.avi", spec).read_bytes()
    if data.count(b"MJPG") != 2:
        raise ValueError("expected the MJPG fourcc in the AVI stream header and format")
    path.write_bytes(data.replace(b"MJPG", b"XQZ1"))
    return path


def write_edit_list(
    path: PathLike, source: PathLike, edits: list[tuple[Fraction, Fraction]]
) -> pathlib.Path:
    """``source`` (an MP4 whose first track is its video, ``moov`` after ``mdat``) with the
    video's edit list replaced by ``edits``: ``(duration, media start)`` pairs in seconds,
    shown one after another, as an editor that cuts a clip without re-encoding writes it
    (two edits: a part of the clip skipped). Sizes of the boxes around it are mended."""
    from raypipe.media.mp4_index import _find  # payload ranges of boxes, by path

    data = bytearray(pathlib.Path(source).read_bytes())
    whole = bytes(data)
    moov, mdat = _find(whole, 0, len(whole), (b"moov",)), _find(whole, 0, len(whole), (b"mdat",))
    if moov is None or mdat is None or moov[0] < mdat[0]:
        raise ValueError("write_edit_list takes an MP4 whose moov comes after its mdat")
    trak = _find(whole, *moov, (b"trak",))  # the first: the video
    mvhd, mdhd = _find(whole, *moov, (b"mvhd",)), _find(whole, *trak, (b"mdia", b"mdhd"))
    movie_scale = int.from_bytes(data[mvhd[0] + 12 : mvhd[0] + 16], "big")  # version 0 boxes
    media_scale = int.from_bytes(data[mdhd[0] + 12 : mdhd[0] + 16], "big")
    entries = b"".join(
        int(duration * movie_scale).to_bytes(4, "big")
        + int(start * media_scale).to_bytes(4, "big", signed=True)
        + (1 << 16).to_bytes(4, "big")  # media rate 1.0
        for duration, start in edits
    )
    elst = b"elst" + bytes(4) + len(edits).to_bytes(4, "big") + entries
    elst = (len(elst) + 4).to_bytes(4, "big") + elst
    edts = (len(elst) + 8).to_bytes(4, "big") + b"edts" + elst
    old = _find(whole, *trak, (b"edts",))
    tkhd_end = _find(whole, *trak, (b"tkhd",))[1]
    at, end = (old[0] - 8, old[1]) if old is not None else (tkhd_end, tkhd_end)
    data[at:end] = edts
    grown = len(edts) - (end - at)
    for box in (trak[0] - 8, moov[0] - 8):  # their 32-bit size fields
        size = int.from_bytes(data[box : box + 4], "big")
        data[box : box + 4] = (size + grown).to_bytes(4, "big")
    out = pathlib.Path(path)
    out.write_bytes(bytes(data))
    return out
