"""The head and the Cues of a Matroska/WebM file, read by element headers alone.

A Matroska file is a tree of EBML elements (an id, a size, a payload). FFmpeg's muxer
writes a ``SeekHead`` that says where the ``Cues`` are (at the end of the file), the
``Info`` (the timestamp scale: what one tick of a block timestamp is) and the ``Tracks``
(for video, ``DefaultDuration``: the nominal frame duration), then the ``Cluster`` elements
holding the blocks, then the ``Cues``: one cue point (time, cluster position) for every
video keyframe. :func:`read_layout` walks the top-level elements by their headers and
jumps over the clusters, so over HTTP or object storage it fetches the head and the cues:
a small share of the file.

The cues give keyframe times, not every frame's. :class:`FrameGrid` is the other half: the
timestamps a constant-rate stream has once its frame times are rounded to the file's ticks
(``round(g / (rate x tick))``, halves away from zero, as FFmpeg rescales them), so the
frames between two keyframes can be named without reading them. Anything this module does
not understand (no cues, unknown-size elements, a track time scale, lacing, another
muxer's cue policy) gives ``None``; callers then read every packet.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

# element ids (with their length marker, as the Matroska specification writes them)
_EBML = 0x1A45DFA3
_SEGMENT = 0x18538067
_SEEKHEAD, _SEEK, _SEEK_ID, _SEEK_POSITION = 0x114D9B74, 0x4DBB, 0x53AB, 0x53AC
_INFO, _TIMESTAMP_SCALE, _MUXING_APP = 0x1549A966, 0x2AD7B1, 0x4D80
_TRACKS, _TRACK_ENTRY, _TRACK_NUMBER, _TRACK_TYPE = 0x1654AE6B, 0xAE, 0xD7, 0x83
_DEFAULT_DURATION, _FLAG_LACING = 0x23E383, 0x9C
_TRACK_TIMESTAMP_SCALE, _CODEC_DELAY = 0x23314F, 0x56AA
_TRACK_FIELDS = (_TRACK_NUMBER, _TRACK_TYPE, _DEFAULT_DURATION, _FLAG_LACING, _CODEC_DELAY)
_CLUSTER = 0x1F43B675
_CUES, _CUE_POINT, _CUE_TIME, _CUE_TRACK_POSITIONS = 0x1C53BB6B, 0xBB, 0xB3, 0xB7
_CUE_TRACK, _CUE_CLUSTER_POSITION = 0xF7, 0xF1
_VIDEO_TRACK = 1
_MAX_HEAD_ELEMENT_BYTES = 64 << 20  # larger Info/Tracks/Cues: not a file to trust
_MAX_TOP_LEVEL_ELEMENTS = 100_000  # clusters walked when no SeekHead names the Cues
_TRUSTED_MUXER = "Lavf"  # FFmpeg's muxer: a cue for every video keyframe, no video lacing


@dataclass(frozen=True, kw_only=True)
class MkvLayout:
    """What the head and the cues of a Matroska file say about one video track.

    ``tick``: seconds per block timestamp unit (the stream's time base);
    ``default_duration_ns``: the track's nominal frame duration; ``cue_times``: the cue
    points of the track, sorted, in ticks; ``last_cluster_at``: where the cluster holding
    the last cue's keyframe starts (a file offset); ``muxing_app``: the Info's MuxingApp."""

    track_number: int
    tick: Fraction
    default_duration_ns: int
    cue_times: tuple[int, ...]
    last_cluster_at: int  # file offset of the cluster of the last cue point
    muxing_app: str

    def __post_init__(self) -> None:
        if self.default_duration_ns <= 0 or self.tick <= 0:
            raise ValueError(
                f"track {self.track_number}: default duration {self.default_duration_ns} ns "
                f"and tick {self.tick} s must be positive"
            )


def _vint(data: bytes, at: int, keep_marker: bool) -> tuple[int | None, int] | None:
    """(value, length) of the EBML variable-size integer at ``data[at]``; the value is
    ``None`` for an all-ones size ("unknown"); ``None`` when it does not fit ``data``."""
    if at >= len(data) or data[at] == 0:
        return None
    length = 8 - data[at].bit_length() + 1
    if at + length > len(data):
        return None
    value = int.from_bytes(data[at : at + length], "big")
    if keep_marker:
        return value, length
    value &= (1 << (7 * length)) - 1
    return (None if value == (1 << (7 * length)) - 1 else value), length


def _header(data: bytes, at: int) -> tuple[int, int | None, int] | None:
    """(id, payload size or ``None`` if unknown, payload start) of the element at ``at``."""
    ident = _vint(data, at, keep_marker=True)
    if ident is None or ident[1] > 4:
        return None
    size = _vint(data, at + ident[1], keep_marker=False)
    if size is None:
        return None
    return int(ident[0] or 0), size[0], at + ident[1] + size[1]


def _children(
    data: bytes, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, int, int]]:
    """(id, payload start, payload end) of the elements in ``data[start:end]``; stops at
    the first one that is unknown-size or runs past ``end``."""
    end = len(data) if end is None else end
    at = start
    while at < end:
        head = _header(data, at)
        if head is None:
            return
        ident, size, payload = head
        if size is None or payload + size > end:
            return
        yield ident, payload, payload + size
        at = payload + size


def _uint(data: bytes, a: int, b: int) -> int:
    return int.from_bytes(data[a:b], "big")


def _read_element(f: Any, at: int, file_size: int) -> tuple[int, int | None, int] | None:
    """The header of the element at file offset ``at`` (payload start as a file offset)."""
    if at < 0 or at >= file_size:
        return None
    f.seek(at)
    head = _header(f.read(12), 0)
    return None if head is None else (head[0], head[1], at + head[2])


def _track(tracks: bytes, video_ordinal: int) -> dict[int, int | float] | None:
    """The fields raypipe needs of the ``video_ordinal``-th video track (0-based) in a
    Tracks payload: FFmpeg's demuxer makes one stream per track, in this order."""
    videos = 0
    for ident, a, b in _children(tracks):
        if ident != _TRACK_ENTRY:
            continue
        fields: dict[int, int | float] = {}
        for field, c, d in _children(tracks, a, b):
            if field == _TRACK_TIMESTAMP_SCALE:
                fields[field] = _float(tracks, c, d)
            elif field in _TRACK_FIELDS:
                fields[field] = _uint(tracks, c, d)
        if fields.get(_TRACK_TYPE) == _VIDEO_TRACK:
            if videos == video_ordinal:
                return fields
            videos += 1
    return None


def _float(data: bytes, a: int, b: int) -> float:
    if b - a == 4:
        return float(struct.unpack(">f", data[a:b])[0])
    if b - a == 8:
        return float(struct.unpack(">d", data[a:b])[0])
    return math.nan


def _cues(cues: bytes, track_number: int) -> dict[int, int]:
    """Cue time -> cluster position (from the segment's start) of the track's cue points."""
    found: dict[int, int] = {}
    for ident, a, b in _children(cues):
        if ident != _CUE_POINT:
            continue
        time = None
        for field, c, d in _children(cues, a, b):
            if field == _CUE_TIME:
                time = _uint(cues, c, d)
            elif field == _CUE_TRACK_POSITIONS and time is not None:
                where = {k: _uint(cues, e, g) for k, e, g in _children(cues, c, d)}
                if where.get(_CUE_TRACK) == track_number and _CUE_CLUSTER_POSITION in where:
                    found.setdefault(time, where[_CUE_CLUSTER_POSITION])
    return found


def read_layout(f: Any, video_ordinal: int) -> MkvLayout | None:
    """The layout of the ``video_ordinal``-th video track (0-based) of the Matroska file
    ``f`` (seekable),
    reading element headers, the SeekHead, Info, Tracks and Cues; ``None`` when any of it
    is missing or not what FFmpeg's muxer writes (see the module docstring)."""
    f.seek(0, 2)
    file_size = f.tell()
    ebml = _read_element(f, 0, file_size)
    if ebml is None or ebml[0] != _EBML or ebml[1] is None:
        return None
    segment = _read_element(f, ebml[2] + ebml[1], file_size)
    if segment is None or segment[0] != _SEGMENT:
        return None
    seg_start = segment[2]
    seg_end = file_size if segment[1] is None else min(file_size, seg_start + segment[1])
    found: dict[int, bytes] = {}
    cues_at: int | None = None
    at, steps = seg_start, 0
    while at < seg_end and len(found) < 3 and steps < _MAX_TOP_LEVEL_ELEMENTS:
        steps += 1
        head = _read_element(f, at, file_size)
        if head is None:
            return None  # damaged
        ident, size, payload = head
        if size is None:
            return None  # unknown-size (live) clusters: no way to jump over them
        if ident in (_SEEKHEAD, _INFO, _TRACKS, _CUES) and ident not in found:
            if size > _MAX_HEAD_ELEMENT_BYTES or payload + size > file_size:
                return None
            f.seek(payload)
            data = f.read(size)
            if len(data) != size:
                return None
            found[ident] = data
            if ident == _SEEKHEAD:
                cues_at = _seek_position(data, _CUES, seg_start)
                found.pop(_SEEKHEAD)  # not one of the three wanted
        if ident == _CLUSTER and _CUES not in found and cues_at is not None and cues_at > at:
            at = cues_at  # FFmpeg writes the cues after the last cluster
            continue
        at = payload + size
    return _layout(found, video_ordinal, seg_start)


def _seek_position(seekhead: bytes, wanted: int, seg_start: int) -> int | None:
    for ident, a, b in _children(seekhead):
        if ident != _SEEK:
            continue
        target, position = None, None
        for field, c, d in _children(seekhead, a, b):
            if field == _SEEK_ID:
                target = _uint(seekhead, c, d)
            elif field == _SEEK_POSITION:
                position = _uint(seekhead, c, d)
        if target == wanted and position is not None:
            return seg_start + position
    return None


def _layout(found: dict[int, bytes], video_ordinal: int, seg_start: int) -> MkvLayout | None:
    if set(found) != {_INFO, _TRACKS, _CUES}:
        return None
    scale, app = 1_000_000, ""
    for ident, a, b in _children(found[_INFO]):
        if ident == _TIMESTAMP_SCALE:
            scale = _uint(found[_INFO], a, b)
        elif ident == _MUXING_APP:
            app = found[_INFO][a:b].decode("utf-8", "replace")
    track = _track(found[_TRACKS], video_ordinal)
    if track is None or _TRACK_NUMBER not in track or scale <= 0:
        return None
    track_number = int(track[_TRACK_NUMBER])
    if track.get(_TRACK_TIMESTAMP_SCALE, 1.0) != 1.0 or track.get(_CODEC_DELAY, 0) != 0:
        return None
    if track.get(_FLAG_LACING, 1) != 0 or not app.startswith(_TRUSTED_MUXER):
        return None  # laced blocks, or a muxer whose cue policy is not FFmpeg's
    duration = int(track.get(_DEFAULT_DURATION, 0))
    cues = _cues(found[_CUES], track_number)
    if duration <= 0 or not cues:
        return None
    times = sorted(cues)
    return MkvLayout(
        track_number=track_number,
        tick=Fraction(scale, 1_000_000_000),
        default_duration_ns=duration,
        cue_times=tuple(times),
        last_cluster_at=seg_start + cues[times[-1]],
        muxing_app=app,
    )


_BLOCK_GROUP, _BLOCK, _BLOCK_DURATION, _REFERENCE_BLOCK = 0xA0, 0xA1, 0x9B, 0xFB
_SIMPLE_BLOCK, _CLUSTER_TIMESTAMP, _VOID = 0xA3, 0xE7, 0xEC
_MAX_CLUSTER_BYTES = 256 << 20


@dataclass(frozen=True)
class Block:
    """One video block as FFmpeg's demuxer makes it a packet: pts (cluster time plus the
    block's), key flag, and duration (``BlockDuration``, else the track's default duration
    in whole ticks), all in ticks."""

    pts: int
    key: bool
    duration: int


def _block(data: bytes, a: int, b: int, cluster_time: int) -> tuple[int, int, bool] | None:
    """(track number, pts, SimpleBlock key flag) of the block at ``data[a:b]``; ``None``
    when it is laced (more than one frame: not what FFmpeg writes for video)."""
    track = _vint(data, a, keep_marker=False)
    if track is None or track[0] is None or a + track[1] + 3 > b:
        return None
    at = a + track[1]
    relative = int.from_bytes(data[at : at + 2], "big", signed=True)
    flags = data[at + 2]
    if flags & 0x06:
        return None
    return track[0], cluster_time + relative, bool(flags & 0x80)


def _cluster_blocks(data: bytes, layout: MkvLayout) -> list[Block] | None:
    """The video track's blocks of a Cluster payload, in file (decode) order."""
    blocks, cluster_time = [], None
    default = int(layout.default_duration_ns * Fraction(1, 10**9) / layout.tick)
    for ident, a, b in _children(data):
        if ident == _CLUSTER_TIMESTAMP:
            cluster_time = _uint(data, a, b)
            continue
        if ident not in (_SIMPLE_BLOCK, _BLOCK_GROUP):
            continue
        if cluster_time is None:
            return None
        duration, key = default, True
        if ident == _SIMPLE_BLOCK:
            parsed = _block(data, a, b, cluster_time)
            key = parsed is not None and parsed[2]
        else:
            parsed = None
            for field, c, d in _children(data, a, b):
                if field == _BLOCK:
                    parsed = _block(data, c, d, cluster_time)
                elif field == _BLOCK_DURATION:
                    duration = _uint(data, c, d)
                elif field == _REFERENCE_BLOCK:
                    key = False
        if parsed is None:
            return None
        if parsed[0] == layout.track_number:
            blocks.append(Block(parsed[1], key, duration))
    return blocks


def tail_blocks(f: Any, layout: MkvLayout) -> list[Block] | None:
    """The video track's blocks from the cluster of the last cue point to the end of the
    file, in decode order, read by element headers (clusters whole, other elements
    skipped); ``None`` when an element is damaged, truncated or of unknown size."""
    f.seek(0, 2)
    file_size = f.tell()
    blocks: list[Block] = []
    at = layout.last_cluster_at
    while at < file_size:
        head = _read_element(f, at, file_size)
        if head is None:
            return None
        ident, size, payload = head
        if size is None or payload + size > file_size:
            return None
        if ident == _CLUSTER:
            if size > _MAX_CLUSTER_BYTES:
                return None
            f.seek(payload)
            got = _cluster_blocks(f.read(size), layout)
            if got is None:
                return None
            blocks += got
        at = payload + size
    return blocks
