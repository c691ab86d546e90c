"""The MP4/MOV sample tables of one track, read from the ``moov`` box alone.

FFmpeg's mov demuxer already builds its index from these tables when it opens a file (every
sample's decode timestamp, size, position and sync flag, with the edit list applied:
PyAV's ``stream.index_entries``), but it keeps the composition offsets (``ctts``) to itself.
This module reads the few boxes raypipe needs to turn that index into every frame's
presentation timestamp without reading a single sample: ``ctts`` (composition offsets),
``stts`` (sample durations) and ``tkhd`` (which track). Top-level boxes are walked by their
headers (8 or 16 bytes each, the ``mdat`` between them is skipped by seeking), so over HTTP
or object storage only the ``moov`` box is fetched: a small share of the file.

Fragmented MP4 (``moof``/``mvex``) keeps its tables per fragment: :func:`read_track_tables`
returns ``None`` for it, and so for anything it does not understand; callers fall back to
reading every packet.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

_CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"})
_MAX_MOOV_BYTES = 256 << 20  # a larger "moov" is not a file raypipe should trust


@dataclass(frozen=True)
class TrackTables:
    """One track's per-sample composition offsets and durations, in decode order (media
    time scale). ``composition_offsets`` is all zeros without a ``ctts`` box."""

    track_id: int
    composition_offsets: tuple[int, ...]
    durations: tuple[int, ...]
    dts_shift: int = 0  # FFmpeg's shift for negative offsets (ctts version 1)

    def pts(self, dts: list[int]) -> list[int]:
        """Presentation timestamps of samples whose decode timestamps (as FFmpeg's index
        gives them, edit list applied) are ``dts``: ``dts + offset + dts_shift``."""
        return [d + c + self.dts_shift for d, c in zip(dts, self.composition_offsets)]

    @property
    def n_samples(self) -> int:
        return len(self.durations)


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the boxes in ``data[start:end]``."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size


def find_moov(f: BinaryIO) -> bytes | None:
    """The payload of the top-level ``moov`` box of the file ``f`` (seekable), reading only
    box headers until it is found; ``None`` when there is none or the file is fragmented."""
    f.seek(0, 2)
    file_size = f.tell()
    pos = 0
    while pos + 8 <= file_size:
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            return None
        size, kind = struct.unpack_from(">I4s", head, 0)
        header = 8
        if size == 1:
            if len(head) < 16:
                return None
            (size,) = struct.unpack_from(">Q", head, 8)
            header = 16
        elif size == 0:
            size = file_size - pos
        if size < header:
            return None
        if kind == b"moof":
            return None  # fragments before the moov: tables are spread over the file
        if kind == b"moov":
            if size > _MAX_MOOV_BYTES:
                return None
            f.seek(pos + header)
            data = f.read(size - header)
            return data if len(data) == size - header else None
        pos += size
    return None


def _full_box(data: bytes, at: int) -> tuple[int, int]:
    """(version, payload offset after the version/flags word) of a full box at ``at``."""
    return data[at], at + 4


def _track_id(data: bytes, start: int, end: int) -> int | None:
    for kind, a, _ in _boxes(data, start, end):
        if kind == b"tkhd":
            version, at = _full_box(data, a)
            at += 16 if version == 1 else 8  # creation and modification times
            return int(struct.unpack_from(">I", data, at)[0])
    return None


def _find(data: bytes, start: int, end: int, path: tuple[bytes, ...]) -> tuple[int, int] | None:
    """The payload range of the box at ``path`` below ``[start, end)``."""
    for kind, a, b in _boxes(data, start, end):
        if kind == path[0]:
            return (a, b) if len(path) == 1 else _find(data, a, b, path[1:])
    return None


def _entries(data: bytes, start: int, signed: bool) -> list[tuple[int, int]]:
    """The (count, value) entries of a ``stts`` or ``ctts`` table."""
    _, at = _full_box(data, start)
    (n,) = struct.unpack_from(">I", data, at)
    fmt = ">Ii" if signed else ">II"
    return [struct.unpack_from(fmt, data, at + 4 + 8 * k) for k in range(n)]


def _expand(entries: list[tuple[int, int]]) -> list[int]:
    return [value for count, value in entries for _ in range(count)]


def read_track_tables(moov: bytes, track_id: int) -> TrackTables | None:
    """The tables of track ``track_id`` in a ``moov`` payload, or ``None`` (no such track,
    fragmented, or tables that do not agree on the sample count)."""
    if _find(moov, 0, len(moov), (b"mvex",)) is not None:
        return None  # fragmented: the moov holds no samples
    for kind, a, b in _boxes(moov):
        if kind != b"trak" or _track_id(moov, a, b) != track_id:
            continue
        stbl = _find(moov, a, b, (b"mdia", b"minf", b"stbl"))
        if stbl is None:
            return None
        stts = _find(moov, *stbl, (b"stts",))
        if stts is None:
            return None
        try:
            durations = _expand(_entries(moov, stts[0], signed=False))
            ctts = _find(moov, *stbl, (b"ctts",))
            # offsets are signed (FFmpeg reads them so in either version of the box)
            composition = _entries(moov, ctts[0], signed=True) if ctts else []
        except struct.error:
            return None
        offsets = _expand(composition) if ctts else [0] * len(durations)
        if len(offsets) != len(durations):
            return None
        # FFmpeg (mov_read_ctts) shifts decode times by the most negative offset, the
        # last entry aside, and presents dts + offset + shift
        shift = max([0, *(-value for _, value in composition[:-1])])
        return TrackTables(
            track_id=track_id,
            composition_offsets=tuple(offsets),
            durations=tuple(durations),
            dts_shift=shift,
        )
    return None


def track_tables(f: Any, track_id: int) -> TrackTables | None:
    """:func:`read_track_tables` of the file object ``f`` (read through :func:`find_moov`)."""
    moov = find_moov(f)
    return None if moov is None else read_track_tables(moov, track_id)


@dataclass(frozen=True)
class IndexScan:
    """What a packet scan gives, read from an MP4/MOV index instead: every kept frame's
    pts and key flag in decode order, the duration of the frame shown last, and whether a
    keyframe is among the samples the edit list drops (the decoder starts there)."""

    pts: list[int]
    keyframe: list[bool]
    last_duration: int
    hidden_keyframe: bool = False


def scan_index(video: Any, f: Any) -> IndexScan | None:
    """``video`` (an open PyAV stream of an MP4/MOV container) scanned from FFmpeg's index
    and the track's tables in ``f`` (the same file, seekable); ``None`` when they do not
    line up (the caller then reads every packet). Samples the edit list drops (FFmpeg's
    discard flag) are left out, as a packet scan leaves them out."""
    entries = [(e.timestamp, e.is_keyframe, e.is_discard) for e in video.index_entries]
    tables = track_tables(f, int(video.id))
    if tables is None or not entries or len(entries) != tables.n_samples:
        return None
    pts_all = tables.pts([ts for ts, _, _ in entries])
    kept = [i for i, (_, _, discard) in enumerate(entries) if not discard]
    if not kept:
        return None
    last = max(kept, key=lambda i: pts_all[i])
    return IndexScan(
        pts=[pts_all[i] for i in kept],
        keyframe=[entries[i][1] for i in kept],
        last_duration=tables.durations[last],
        hidden_keyframe=any(key and discard for _, key, discard in entries),
    )
