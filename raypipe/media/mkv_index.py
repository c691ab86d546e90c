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

from raypipe.media.mp4_index import IndexScan

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
_CUES, _CUE_POINT, _CUE_TIME, _CUE_TRACK_POSITIONS, _CUE_TRACK = (
    0x1C53BB6B,
    0xBB,
    0xB3,
    0xB7,
    0xF7,
)
_VIDEO_TRACK = 1
_MAX_HEAD_ELEMENT_BYTES = 64 << 20  # larger Info/Tracks/Cues: not a file to trust
_MAX_TOP_LEVEL_ELEMENTS = 100_000  # clusters walked when no SeekHead names the Cues
_TRUSTED_MUXER = "Lavf"  # FFmpeg's muxer: a cue for every video keyframe, no video lacing


@dataclass(frozen=True, kw_only=True)
class MkvLayout:
    """What the head and the cues of a Matroska file say about one video track.

    ``tick``: seconds per block timestamp unit (the stream's time base);
    ``default_duration_ns``: the track's nominal frame duration; ``cue_times``: the cue
    points of the track, sorted, in ticks; ``muxing_app``: the Info's MuxingApp."""

    track_number: int
    tick: Fraction
    default_duration_ns: int
    cue_times: tuple[int, ...]
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


def _cue_times(cues: bytes, track_number: int) -> list[int]:
    times = []
    for ident, a, b in _children(cues):
        if ident != _CUE_POINT:
            continue
        time, tracks = None, set()
        for field, c, d in _children(cues, a, b):
            if field == _CUE_TIME:
                time = _uint(cues, c, d)
            elif field == _CUE_TRACK_POSITIONS:
                track = [_uint(cues, e, g) for k, e, g in _children(cues, c, d) if k == _CUE_TRACK]
                tracks.update(track)
        if time is not None and track_number in tracks:
            times.append(time)
    return times


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
    return _layout(found, video_ordinal)


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


def _layout(found: dict[int, bytes], video_ordinal: int) -> MkvLayout | None:
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
    times = sorted(set(_cue_times(found[_CUES], track_number)))
    if duration <= 0 or not times:
        return None
    return MkvLayout(
        track_number=track_number,
        tick=Fraction(scale, 1_000_000_000),
        default_duration_ns=duration,
        cue_times=tuple(times),
        muxing_app=app,
    )


_RATE_DENOMINATORS = (1, 1001, 2, 4, 3, 5, 6, 8)  # NTSC rates, then halves, thirds...


@dataclass(frozen=True)
class FrameGrid:
    """A constant frame rate's timestamps in ticks: frame ``g`` (an integer) is at
    ``origin + round(g x period)``, halves away from zero (FFmpeg's ``av_rescale_q``).
    ``origin`` 0: frame times counted from time 0; else from a first frame that a muxer
    shifted by whole ticks (FFmpeg moves every stream when another starts earlier)."""

    period: Fraction  # ticks per frame, > 1 so that every frame has its own tick
    origin: int = 0

    def pts(self, g: int) -> int:
        exact = g * self.period
        rounded = math.floor(exact + _HALF) if exact >= 0 else -math.floor(-exact + _HALF)
        return self.origin + rounded

    def index(self, pts: int) -> int | None:
        """The frame at ``pts``, or ``None`` when ``pts`` is off the grid."""
        g = round((pts - self.origin) / self.period)
        for k in (g - 1, g, g + 1):
            if self.pts(k) == pts:
                return k
        return None

    @classmethod
    def period_of(cls, default_duration_ns: int, tick: Fraction) -> Fraction | None:
        """Ticks per frame of the frame rate whose duration FFmpeg writes as
        ``default_duration_ns`` (``1e9 / rate``, truncated or rounded to ns), or ``None``
        when no rate with a small denominator gives it, or frames closer than a tick."""
        for den in _RATE_DENOMINATORS:
            num = round(Fraction(10**9 * den, default_duration_ns))
            if num <= 0:
                continue
            ns = Fraction(10**9 * den, num)
            if default_duration_ns in (math.floor(ns), round(ns)):
                period = ns / (10**9 * tick)
                return period if period > 1 else None
        return None


_HALF = Fraction(1, 2)


_HEAD_PACKETS = 32  # packets read from the start to check the prediction against
_REORDER_FRAMES = 16  # most frames a decoder holds back (H.264/HEVC's limit)


def _packets(container: Any, video: Any, limit: int | None = None) -> list[tuple[int, bool, int]]:
    """(pts, key flag, duration) of the next packets of ``video`` in demux order (all, or
    ``limit``), leaving out what a packet scan leaves out; ``[]`` on one without pts."""
    got: list[tuple[int, bool, int]] = []
    for packet in container.demux(video):
        if packet.size == 0 or packet.is_discard:
            continue
        if packet.pts is None:
            return []
        got.append((int(packet.pts), bool(packet.is_keyframe), int(packet.duration or 0)))
        if limit is not None and len(got) == limit:
            break
    return got


def scan_cues(container: Any, video: Any, layout: MkvLayout) -> IndexScan | None:
    """``video`` (an open PyAV stream of a Matroska container, not yet read) scanned from
    ``layout``: every frame's pts in display order (the grid of the track's default
    duration from the first frame to the last keyframe, then the packets after it), the
    cue points as keyframes, and the duration of the frame shown last.

    Only the first packets and those from the last keyframe on are demuxed (one seek);
    they must agree with the grid and the cues, else ``None``: the stream is not the
    constant-rate stream the index describes (the container has then been read from,
    reopen it). ``FrameGrid`` errors in the middle of the stream (a dropped frame between
    two keyframes both on the grid) are not seen here: the decode tasks' frame-count check
    turns them into a typed error."""
    period = FrameGrid.period_of(layout.default_duration_ns, layout.tick)
    if period is None or video.time_base is None or Fraction(video.time_base) != layout.tick:
        return None
    grids = [FrameGrid(period, origin) for origin in (0, layout.cue_times[0])]
    grids = [g for g in grids if all(g.index(t) is not None for t in layout.cue_times)]
    if not grids:
        return None  # a keyframe off the grid: not constant-rate
    head = _packets(container, video, _HEAD_PACKETS)
    if not head:
        return None
    try:
        container.seek(layout.cue_times[-1], stream=video, backward=True, any_frame=False)
    except Exception:  # noqa: BLE001 - PyAV raises FFmpegError subclasses and OSError
        return None
    tail = _packets(container, video)
    for grid in grids:
        scan = _predict(grid, layout, head, tail)
        if scan is not None:
            return scan
    return None


def _predict(
    grid: FrameGrid,
    layout: MkvLayout,
    head: list[tuple[int, bool, int]],
    tail: list[tuple[int, bool, int]],
) -> IndexScan | None:
    """The scan the grid, the cues and the demuxed ``head`` and ``tail`` (from the last
    keyframe) agree on, or ``None``."""
    keys = [int(grid.index(t) or 0) for t in layout.cue_times]  # on the grid: checked
    cues = set(layout.cue_times)
    last_key = layout.cue_times[-1]
    if not tail or tail[0][:2] != (last_key, True) or any(k for _, k, _ in tail[1:]):
        return None  # the seek missed the last cue, or keyframes without a cue follow it
    tail_pts = [p for p, _, _ in tail]
    if len(set(tail_pts)) != len(tail_pts):
        return None  # duplicate timestamps: the demux pass says what is wrong
    after = sorted(p for p in tail_pts if p >= last_key)
    if after != [grid.pts(g) for g in range(keys[-1], keys[-1] + len(after))]:
        return None
    first = grid.index(min(p for p, _, _ in head))
    if first is None or first > keys[0]:
        return None
    end = keys[-1] + len(after)  # frames [first, end) on the grid
    pts = [grid.pts(g) for g in range(first, end)]
    shown = set(pts)
    if any(p not in shown or key != (p in cues) for p, key, _ in head + tail):
        return None  # a packet off the grid or outside it, or a key flag the cues lack
    seen = sorted(p for p, _, _ in head)
    checked = len(seen) if len(head) < _HEAD_PACKETS else len(seen) - _REORDER_FRAMES
    if seen[:checked] != pts[:checked] or (len(head) < _HEAD_PACKETS and len(pts) != len(seen)):
        return None  # frames missing at the start (a variable rate), or a short file's
    last = max(tail, key=lambda packet: packet[0])
    return IndexScan(pts=pts, keyframe=[p in cues for p in pts], last_duration=last[2])
