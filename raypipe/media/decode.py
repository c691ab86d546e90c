"""Exact range decode: the frames of one chunk, no more, no fewer.

Seek backward to the chunk's keyframe, decode, drop frames before ``start_pts``, stop after
``n_frames``, and check the count and timestamps against the plan (the last frame must
have the plan's last pts, so a frame the plan does not have cannot hide). Frames are
converted to RGB with the source's matrix and range and turned upright
(:class:`~raypipe.media.picture.PictureFormat`): ``rgb24`` uint8 for 8-bit sources,
``rgb48le`` uint16 for deeper ones. When a seek lands after that keyframe (the first
frame decoded comes after ``start_pts``, or none comes: demuxers without an index, MPEG-PS
and MPEG-TS) the chunk is decoded again from 1 s and then 10 s earlier
(:data:`SEEK_BACK_SECONDS`), and last from the start of the file, which is always correct,
only slower. A chunk planned with context for a temporal model
(:class:`~raypipe.media.plan.Context`) is decoded with it: the context's range, checked the
same way; :attr:`DecodedChunk.before` and :attr:`DecodedChunk.after` say how many of the
frames are context.

With ``carry`` (the pipeline's decode tasks) the decoder stays open after a chunk, one per
process, and the process's next chunk goes on with it instead of opening and seeking when
it starts where the decoder stands or later in the same GOP (:class:`_Carried`): the
later pieces of a split GOP are decoded once, not each again from the keyframe. The frames
are those of a decode from the keyframe; any doubt, and the chunk is decoded afresh.

Decoder (``decoder``): ``cpu`` is FFmpeg's software decoder; ``nvdec`` decodes on the
GPU's video engine (NVDEC, through FFmpeg's CUDA hwaccel: the same decoder and timestamps,
frames downloaded to system memory before the RGB conversion) and ``auto`` uses NVDEC
where it works. When NVDEC cannot start in a process (no NVIDIA driver or GPU, a PyAV
build without CUDA) the reason is remembered for the process and chunks decode on the CPU;
:attr:`DecodedChunk.decoder` says which one ran and :attr:`DecodedChunk.note` why NVDEC did
not, so the caller can report a fallback once instead of per frame.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import av
import numpy as np
from av.video.reformatter import Interpolation

from raypipe.config import DECODERS
from raypipe.errors import CorruptVideoError, DecodeError
from raypipe.media.jumps import Jump, closed, source_time
from raypipe.media.picture import PictureFormat
from raypipe.media.plan import Chunk
from raypipe.media.probe import DECODE_ORDER_ONLY, VideoInfo, stamped_frames, whole_packets
from raypipe.media.rgb import RgbConverter
from raypipe.media.source import is_local, local_path, open_input
from raypipe.media.yuv import YuvPacker, YuvRule
from raypipe.recycle import Allocate

_nvdec_unavailable: str | None = None  # why NVDEC cannot start here ("" if it can), once known


@dataclass(frozen=True)
class DecodedChunk:
    """A chunk's frames, upright RGB ``(n, H, W, 3)`` (uint8, or uint16 for sources deeper
    than 8 bits), and their pts ``(n,)`` in display order.

    ``decoder``: ``"nvdec"`` or ``"cpu"``, the one that decoded it; ``note``: why NVDEC
    was not used when it was asked for (``""`` otherwise). ``before``/``after``: context
    frames (for a temporal model) before and after the chunk's own frames. ``handoff``:
    ``"yuv"`` when the frames are packed YUV ``(n, H * W * 3 / 2)`` (a YUV hand-off,
    :mod:`raypipe.media.yuv`), else ``"rgb"``; ``handoff_note``: why a chunk that could
    have gone as YUV went as RGB. ``resize_note``: that some of its frames came in
    another size and were scaled to the stream's (:func:`_decode_frames`), else ``""``."""

    frames: np.ndarray
    pts: np.ndarray
    decoder: str = "cpu"
    note: str = ""
    before: int = 0
    after: int = 0
    handoff: str = "rgb"
    handoff_note: str = ""
    carried: bool = False
    resize_note: str = ""


class _Overshoot(Exception):
    """The seek landed after the frames we need."""


def nvdec_unavailable() -> str | None:
    """Why NVDEC cannot start in this process (``""`` when it can), ``None`` before a try."""
    return _nvdec_unavailable


def nvdec_problem() -> str:
    """Why NVDEC cannot decode in this process, ``""`` when it can: FFmpeg is asked for a CUDA
    device (fails without an NVIDIA GPU, its driver, or a PyAV build with CUDA)."""
    from av.codec.hwaccel import HWAccel

    try:
        HWAccel("cuda").create(av.codec.Codec("h264", "r"))
    except (OSError, av.error.FFmpegError, ValueError, NotImplementedError) as e:
        from raypipe.media.encode import has_cuda_driver

        # without a driver FFmpeg says EPERM, which reads like a permission to fix (a sweep)
        hint = "" if has_cuda_driver() else "no NVIDIA driver (libcuda.so.1 not found): "
        return (
            f"NVDEC unavailable: {hint}FFmpeg cannot open a CUDA device here ({e}); it needs "
            "an NVIDIA GPU visible to this process, its driver, and a PyAV build with CUDA"
        )
    return ""


def _open_decoder(uri: str, decoder: str) -> tuple[Any, str]:
    """The input opened for ``decoder``, and why NVDEC is not used when it was asked for."""
    global _nvdec_unavailable
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if decoder == "cpu":
        return open_input(uri), ""
    from av.codec.hwaccel import HWAccel

    if _nvdec_unavailable is None:
        _nvdec_unavailable = nvdec_problem()
    if _nvdec_unavailable:
        return open_input(uri), _nvdec_unavailable
    # allow_software_fallback: a codec NVDEC lacks (e.g. ffv1) decodes on the CPU instead
    return open_input(uri, hwaccel=HWAccel("cuda", allow_software_fallback=True)), ""


def decode_chunk(
    info: VideoInfo,
    chunk: Chunk,
    *,
    threads: int = 0,
    keep: Sequence[int] | None = None,
    decoder: str = "cpu",
    picture: PictureFormat | None = None,
    allocate: Allocate | None = None,
    handoff: YuvRule | None = None,
    carry: bool = False,
) -> DecodedChunk:
    """Decode exactly ``chunk.n_frames`` frames of ``info.uri`` in ``[start_pts, end_pts)``.

    ``keep``: offsets within the chunk (0-based, display order) of the frames to return;
    the others are still decoded (later frames may reference them) but not converted to
    RGB. ``None`` returns every frame. ``threads`` 0 lets FFmpeg choose. Raises
    :class:`DecodeError` when the decoded frames do not match the plan and
    :class:`CorruptVideoError` when the stream does not decode. ``decoder``: ``cpu``,
    ``nvdec`` or ``auto`` (see the module docstring). ``picture``: the source's picture
    facts (``None``: ``info.picture_format``). A chunk with a context is decoded with its
    context frames (``keep`` must then be ``None``). ``allocate(shape, dtype)`` makes the
    frames' array (``np.empty`` by default; the pipeline's decode task passes
    :meth:`raypipe.recycle.RecycledArrays.empty`). ``handoff``: the run's YUV hand-off
    rule; frames of a source it takes are returned packed YUV, not RGB. ``carry``: keep
    the decoder open after the chunk, and go on with it when the next chunk this process
    decodes starts where this one ended or a little later, in the same GOP
    (:class:`_Carried`; :attr:`DecodedChunk.carried`).
    """
    wanted = None if keep is None else sorted(set(keep))
    picture = picture or info.picture_format
    context = chunk.context
    if context is not None and keep is not None:
        raise ValueError(f"{chunk.chunk_id}: keep and context frames do not combine")
    note = "" if handoff is None else handoff.problem(picture)
    yuv = handoff is not None and not note
    span = chunk.decode_range
    args = (threads, wanted, decoder, picture, allocate, yuv)
    decoded = None
    for n, seek_pts in enumerate(_seek_targets(info, span.seek_pts)):
        try:
            decoded = _decode(info, span, seek_pts, *args, carry=carry, take=carry and n == 0)
            break
        except _Overshoot:
            continue
    assert decoded is not None  # the last target (the file's start) cannot overshoot
    decoded = dataclasses.replace(decoded, handoff_note=note)
    if context is None:
        return decoded
    return dataclasses.replace(decoded, before=context.before, after=context.after)


SEEK_BACK_SECONDS = (1, 10)
"""How far before a chunk's keyframe a decode seeks again when a seek landed after it, before
it decodes from the file's start: demuxers without an index seek by a binary search on
decode times (MPEG-PS: a DVD's VOBs, a camcorder's .mpg), which lands on the packet
*decoded* at the keyframe's time, a frame or two after the keyframe when B-frames delay
it, and the decoder then starts at the next GOP."""


def _seek_targets(info: VideoInfo, seek_pts: int | None) -> list[int | None]:
    """Where :func:`decode_chunk` seeks, in turn, for a chunk whose keyframe is at
    ``seek_pts``: there, :data:`SEEK_BACK_SECONDS` earlier, then the file's start
    (``None``); frames before the chunk are decoded and dropped, so landing early is
    only slower."""
    if seek_pts is None:
        return [None]
    seek_pts = source_time(seek_pts, info.jumps)  # the source's clock (raypipe.media.jumps)
    ticks = [round(seconds / info.time_base) for seconds in SEEK_BACK_SECONDS]
    return [seek_pts, *(seek_pts - t for t in ticks), None]


@dataclass
class _Carried:
    """An open decoder a decode task left for its process's next chunk: a chunk cut from
    the middle of a GOP (chunks capped by their bytes split long GOPs: ``--chunk-mib``)
    would otherwise decode again from the keyframe, and drop, every frame before it.

    Taken by a chunk of the same input, stream, decoder and threads, of a local file not
    changed since (its inode, size and mtime), within :data:`CARRY_SECONDS`, that starts
    at or after where the decoder stands (``next_pts``, the next frame it gives) and no
    earlier than where a fresh decode would start (the chunk's keyframe): the decoder goes
    on, dropping the frames in between, as a decode from the keyframe drops those before
    the chunk. Its first frame must be ``next_pts`` and the chunk's first frame must come,
    else the chunk is decoded afresh. Anything else closes it."""

    key: tuple[Any, ...]
    next_pts: int
    stack: contextlib.ExitStack
    stream: Any
    frames: Iterator[av.VideoFrame]
    note: str
    left: float  # time.monotonic() when it was left
    preroll_until: int | None = None  # packets shown before this pts: pre-roll (_frames)

    def close(self) -> None:
        self.stack.close()


CARRY_SECONDS = 30.0
"""How long an open decoder waits for its next chunk (a run's next chunks come within
seconds; a process that does other work meanwhile closes it at its next decode)."""

_carried: _Carried | None = None


def release_carried() -> None:
    """Close the decoder a chunk left open in this process (:func:`decode_chunk`'s
    ``carry``), if any."""
    global _carried
    carried, _carried = _carried, None
    if carried is not None:
        carried.close()


def _carry_key(info: VideoInfo, decoder: str, threads: int) -> tuple[Any, ...]:
    identity: tuple[Any, ...] = ()
    if is_local(info.uri):
        try:
            st = os.stat(local_path(info.uri))
        except OSError:
            return ()  # nothing to carry: opening will say what is wrong
        identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return (info.uri, info.stream_index, decoder, threads, *identity)


def _take_carried(key: tuple[Any, ...], chunk: Chunk) -> _Carried | None:
    """The process's open decoder if it can go on to ``chunk`` of ``key``'s input with
    fewer frames than a fresh decode from the chunk's keyframe, else ``None`` (and a
    carried decoder that does not fit is closed)."""
    global _carried
    carried, _carried = _carried, None
    if carried is None:
        return None
    fresh = time.monotonic() - carried.left <= CARRY_SECONDS
    at = carried.next_pts
    ahead = chunk.seek_pts is None or chunk.seek_pts <= at
    if key and carried.key == key and fresh and ahead and at <= chunk.start_pts:
        return carried
    carried.close()
    return None


def _open(
    info: VideoInfo, chunk: Chunk, decoder: str, threads: int, seek_pts: int | None
) -> _Carried:
    stack = contextlib.ExitStack()
    try:
        opened, note = _open_decoder(info.uri, decoder)
        container = stack.enter_context(opened)
        stream = cast(av.VideoStream, container.streams[info.stream_index])
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        if seek_pts is not None:
            try:
                container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
            except av.error.FFmpegError as e:
                raise CorruptVideoError(
                    f"input '{info.uri}' does not decode in chunk {chunk.chunk_id}: {e}"
                ) from e
    except BaseException:
        stack.close()
        raise
    source = _Carried(
        key=(), next_pts=0, stack=stack, stream=stream, frames=iter(()), note=note, left=0.0
    )
    source.frames = _frames(container, stream, source, info.jumps)
    return source


PREROLL_SKIPS = frozenset({"h264", "hevc"})
"""Codecs whose pre-roll skips the pictures no other picture refers to (:func:`_frames`)."""


def _frames(
    container: Any, stream: Any, source: _Carried, jumps: tuple[Jump, ...] = ()
) -> Iterator[av.VideoFrame]:
    """:func:`_preroll_frames`, each frame's pts on the closed timeline where the source's
    clock jumps (``jumps``: :mod:`raypipe.media.jumps`), as the plan has them."""
    if not jumps:
        yield from _preroll_frames(container, stream, source)
        return
    for frame in _preroll_frames(container, stream, source, jumps):
        if frame.pts is not None:
            frame.pts = closed(frame.pts, jumps)
        yield frame


def _preroll_frames(
    container: Any, stream: Any, source: _Carried, jumps: tuple[Jump, ...] = ()
) -> Iterator[av.VideoFrame]:
    """:func:`~raypipe.media.probe.stamped_frames` of ``stream``, the pre-roll cheaper where
    it can be: while the packets are shown before ``source.preroll_until`` (a chunk that
    starts inside a GOP, decoded from its keyframe), the decoder skips the pictures that no
    other picture refers to (FFmpeg's ``skip_frame`` ``NONREF``: non-reference B-frames),
    whose frames would be dropped anyway; from the first packet shown at or after it (or
    one without a pts) every picture is decoded. The frames kept are the same bits. 150 4K
    frames decoded after a 50-frame pre-roll took 4.38 against 4.64 s of CPU (the 720p
    benchmark clip's 55-frame pre-roll: no gain; benchmarks/README.md, session 42). Only
    for the software decoder of :data:`PREROLL_SKIPS` in containers whose packets carry
    their display times (not :data:`DECODE_ORDER_ONLY`); elsewhere, and for a decoder
    carried from the chunk before, every picture is decoded. A packet's time is compared
    on the closed timeline of the clock's ``jumps``."""
    ctx = stream.codec_context
    if (
        container.format.name in DECODE_ORDER_ONLY
        or ctx is None
        or ctx.name not in PREROLL_SKIPS
        or ctx.is_hwaccel
    ):
        yield from stamped_frames(container, stream)
        return
    skipping = False
    for packet in whole_packets(container, stream):
        until = source.preroll_until
        skip = until is not None and packet.pts is not None and closed(packet.pts, jumps) < until
        if skip != skipping:
            ctx.skip_frame = "NONREF" if skip else "DEFAULT"
            skipping = skip
        if not skip:
            source.preroll_until = None  # every later packet is decoded
        yield from packet.decode()


def _decode(
    info: VideoInfo,
    chunk: Chunk,
    seek_pts: int | None,
    threads: int,
    keep: list[int] | None,
    decoder: str,
    picture: PictureFormat,
    allocate: Allocate | None,
    yuv: bool,
    *,
    carry: bool,
    take: bool,
) -> DecodedChunk:
    global _carried
    key = _carry_key(info, decoder, threads) if carry else ()
    source = _take_carried(key, chunk) if take else None
    carried = source is not None
    if source is None:
        source = _open(info, chunk, decoder, threads, seek_pts)
    try:
        decoded = _decode_frames(
            info, chunk, source, seek_pts, keep, picture, allocate, yuv, carried=carried
        )
    except (_Stale, DecodeError, CorruptVideoError):
        source.close()
        if not carried:
            raise
        # the plan's frames did not follow on: decode as if nothing had been carried
        args = (threads, keep, decoder, picture, allocate, yuv)
        return _decode(info, chunk, seek_pts, *args, carry=carry, take=False)
    except BaseException:
        source.close()
        raise
    if decoder != "cpu" and decoded.decoder == "cpu" and not decoded.note:
        note = f"NVDEC does not decode {info.codec} here; FFmpeg fell back to its CPU decoder"
        decoded = dataclasses.replace(decoded, note=note)
    if key:
        source.key, source.next_pts, source.left = key, chunk.end_pts, time.monotonic()
        _carried = source
    else:
        source.close()
    return decoded


class _Stale(Exception):
    """A carried decoder is not where it was left, or passed the chunk's first frame."""


def _decode_frames(
    info: VideoInfo,
    chunk: Chunk,
    source: _Carried,
    seek_pts: int | None,
    keep: list[int] | None,
    picture: PictureFormat,
    allocate: Allocate | None,
    yuv: bool,
    *,
    carried: bool,
) -> DecodedChunk:
    slot = {offset: i for i, offset in enumerate(keep)} if keep is not None else None
    n_out = chunk.n_frames if keep is None else len(keep)
    width, height = picture.upright_size
    allocate = allocate or np.empty
    convert: RgbConverter | YuvPacker
    if yuv:
        frames = allocate((n_out, height * width * 3 // 2), np.dtype(np.uint8))
        convert = YuvPacker(picture)
    else:
        frames = allocate((n_out, height, width, 3), np.dtype(picture.dtype))
        convert = RgbConverter(picture)  # one swscale context for the whole chunk
    pts = np.empty(n_out, dtype=np.int64)
    n = 0
    first = True
    resize_note = ""
    stream = source.stream
    source.preroll_until = None if carried else chunk.start_pts
    try:
        for frame in source.frames:
            t = frame.pts
            if t is None:
                raise DecodeError(f"{chunk.chunk_id}: decoded a frame without pts")
            if first and carried and t != source.next_pts:
                raise _Stale  # the decoder is not where it was left
            first = False
            if t < chunk.start_pts:
                continue
            if n == 0 and t != chunk.start_pts and carried:
                raise _Stale
            if n == 0 and t != chunk.start_pts and seek_pts is not None:
                raise _Overshoot  # landed after the chunk's first frame, or after the chunk
            if t >= chunk.end_pts:
                break
            if (frame.width, frame.height) != (picture.coded_width, picture.coded_height):
                # a broadcast recording's ads in another size: scaled to the stream's, as
                # ffmpeg's filter graph scales them (bicubic, its default)
                if not resize_note:
                    resize_note = (
                        f"frames from {float(t * stream.time_base):.3f}s are "
                        f"{frame.width}x{frame.height}, not the stream's "
                        f"{picture.coded_width}x{picture.coded_height}: scaled to it, as "
                        "ffmpeg scales them"
                    )
                frame = frame.reformat(
                    width=picture.coded_width,
                    height=picture.coded_height,
                    interpolation=Interpolation.BICUBIC,
                )
            i = n if slot is None else slot.get(n, -1)
            if i >= 0:
                frames[i] = convert(frame)
                pts[i] = t
            n += 1
            if n == chunk.n_frames:
                if t != chunk.last_pts:  # frames the plan does not have came first
                    raise DecodeError(
                        f"{chunk.chunk_id}: more than the planned {chunk.n_frames} frames "
                        f"in [{chunk.start_pts}, {chunk.end_pts}): frame {n} has pts {t}, "
                        f"the plan's last frame {chunk.last_pts}; the input is probably "
                        "damaged"
                    )
                break
    except av.error.FFmpegError as e:
        raise CorruptVideoError(
            f"input '{info.uri}' does not decode in chunk {chunk.chunk_id}: {e}"
        ) from e
    used = "nvdec" if stream.codec_context.is_hwaccel else "cpu"
    if n == 0 and carried:
        raise _Stale
    if n == 0 and seek_pts is not None:
        raise _Overshoot  # the seek landed at the end (MPEG-TS: past the last keyframe)
    if n != chunk.n_frames:
        raise DecodeError(
            f"{chunk.chunk_id}: decoded {n} frames in [{chunk.start_pts}, {chunk.end_pts}), "
            f"the plan expects {chunk.n_frames}; the input is probably damaged"
        )
    if len(pts) > 1 and not np.all(np.diff(pts) > 0):
        raise DecodeError(f"{chunk.chunk_id}: decoded frames are not in display order")
    return DecodedChunk(
        frames=frames,
        pts=pts,
        decoder=used,
        note=source.note,
        handoff="yuv" if yuv else "rgb",
        carried=carried,
        resize_note=resize_note,
    )
