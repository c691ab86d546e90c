"""A Matroska/WebM file's display size, written into the file FFmpeg's muxer has closed.

Matroska keeps a picture's aspect ratio in its video track's ``DisplayWidth`` and
``DisplayHeight``, which FFmpeg's muxer writes from the stream's sample aspect ratio
(``AVStream.sample_aspect_ratio``), a field PyAV cannot set. Without them a VP9, AV1 or
FFV1 picture with non-square pixels plays squeezed or stretched: those bitstreams have no
place of their own for the ratio (H.264 and HEVC do, and players fall back to it).

:func:`write_display_size` puts them in afterwards, as FFmpeg would have: in Matroska the
display aspect ratio (``DisplayUnit`` 3), in WebM, which knows pixels only, the display
width in pixels. The new elements make the ``Tracks`` element a few bytes longer; they are
taken from the ``Void`` that FFmpeg's muxer leaves after its ``SeekHead`` (room for seek
entries it may add), so nothing from ``Tracks`` on moves: the clusters, the cues and every
position they hold stay as they are. The elements between the two (``Info``) move back by
as much, and the ``SeekHead`` entries that point at them are mended; the CRC-32 elements of
the two rewritten elements are computed again. A file laid out otherwise is left as it is
(``False``), and the caller says the ratio is lost.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable
from fractions import Fraction

from raypipe.media.mkv_index import (
    _CLUSTER,
    _EBML,
    _SEEK,
    _SEEK_POSITION,
    _SEEKHEAD,
    _SEGMENT,
    _TRACK_ENTRY,
    _TRACK_TYPE,
    _TRACKS,
    _VIDEO_TRACK,
    _header,
    _uint,
)

_VOID, _CRC32 = 0xEC, 0xBF
_VIDEO, _PIXEL_WIDTH, _PIXEL_HEIGHT = 0xE0, 0xB0, 0xBA
_DISPLAY_WIDTH, _DISPLAY_HEIGHT, _DISPLAY_UNIT = 0x54B0, 0x54BA, 0x54B2
_DISPLAY_FIELDS = (_DISPLAY_WIDTH, _DISPLAY_HEIGHT, _DISPLAY_UNIT)
_UNIT_ASPECT_RATIO = 3  # DisplayUnit: the display size is an aspect ratio, not pixels
_HEAD_BYTES = 1 << 20  # read at first; a longer head is read to the end of Tracks
_MAX_HEAD_BYTES = 64 << 20


def write_display_size(path: str, sar: Fraction, *, webm: bool) -> bool:
    """Give the video track of the Matroska (``webm``: WebM) file at ``path`` the display
    size of pixels ``sar`` wide to high, in place; ``False`` (the file untouched) when
    its layout is not the one this module knows (see the module docstring)."""
    with open(path, "r+b") as f:
        data = f.read(_HEAD_BYTES)
        region = _head_region(data)
        if region is None and len(data) == _HEAD_BYTES:
            f.seek(0)
            data = f.read(_MAX_HEAD_BYTES)
            region = _head_region(data)
        if region is None:
            return False
        seg_start, elements = region
        patched = _patched(data, seg_start, elements, sar, webm)
        if patched is None:
            return False
        at, new = patched
        f.seek(at)
        f.write(new)
    return True


_Element = tuple[int, int, int, int]  # id, start, payload start, end


def _head_region(data: bytes) -> tuple[int, list[_Element]] | None:
    """The segment's payload start and its top-level elements up to and including
    ``Tracks``, read from ``data`` (the file's head); ``None`` when ``Tracks`` does not come
    before the first cluster or is not wholly in ``data``."""
    ebml = _header(data, 0)
    if ebml is None or ebml[0] != _EBML or ebml[1] is None:
        return None
    segment = _header(data, ebml[2] + ebml[1])
    if segment is None or segment[0] != _SEGMENT:
        return None
    seg_start = segment[2]
    elements: list[_Element] = []
    at = seg_start
    while True:
        head = _header(data, at)
        if head is None or head[1] is None or head[2] + head[1] > len(data):
            return None
        ident, size, payload = head
        if ident == _CLUSTER:
            return None
        elements.append((ident, at, payload, payload + size))
        if ident == _TRACKS:
            return seg_start, elements
        at = payload + size


def _patched(
    data: bytes, seg_start: int, elements: list[_Element], sar: Fraction, webm: bool
) -> tuple[int, bytes] | None:
    """(file offset, bytes to write there) that give the video track its display size,
    as long as the bytes they replace; ``None`` when that cannot be done."""
    ids = [e[0] for e in elements]
    if ids.count(_SEEKHEAD) != 1 or ids.count(_VOID) < 1:
        return None
    seekhead = elements[ids.index(_SEEKHEAD)]
    void_index = max(i for i, ident in enumerate(ids) if ident == _VOID)
    void, tracks = elements[void_index], elements[-1]
    if seekhead[1] > void[1]:
        return None
    new_tracks = _tracks_with_display(data, tracks, sar, webm)
    if new_tracks is None:
        return None
    grown = len(new_tracks) - (tracks[3] - tracks[1])
    left = (void[3] - void[1]) - grown
    if left < 0 or left == 1:  # a Void is 2 bytes at least (an id and a size)
        return None
    moved_from, moved_to = void[3], tracks[1]  # Info and the like, moved back by `grown`
    positions = {e[1] - seg_start: e[1] - seg_start - grown for e in elements[void_index + 1 :]}
    new_seekhead = _seekhead_moved(data, seekhead, positions)
    if new_seekhead is None:
        return None
    new = (
        new_seekhead
        + data[seekhead[3] : void[1]]
        + (_void(left) if left else b"")
        + data[moved_from:moved_to]
        + new_tracks
    )
    if len(new) != tracks[3] - seekhead[1]:
        return None
    return seekhead[1], new


def _tracks_with_display(data: bytes, tracks: _Element, sar: Fraction, webm: bool) -> bytes | None:
    """The ``Tracks`` element with its one video track's display size set."""
    entries = _elements(data, tracks[2], tracks[3]) or []
    video = [e for e in entries if e[0] == _TRACK_ENTRY and _track_type(data, e) == _VIDEO_TRACK]
    if len(video) != 1:
        return None
    display = functools.partial(_video_with_display, data, sar=sar, webm=webm)

    def entry(e: _Element) -> bytes | None:  # the video track entry, its Video replaced
        return _payload_with(data, e, picked=lambda c: c[0] == _VIDEO, payload_of=display)

    payload = _payload_with(data, tracks, picked=lambda e: e == video[0], payload_of=entry)
    return None if payload is None else _element(_TRACKS, payload, like=_size_length(tracks))


def _track_type(data: bytes, entry: _Element) -> int | None:
    for ident, _, a, b in _elements(data, entry[2], entry[3]) or ():
        if ident == _TRACK_TYPE:
            return _uint(data, a, b)
    return None


def _payload_with(
    data: bytes,
    parent: _Element,
    *,
    picked: Callable[[_Element], bool],
    payload_of: Callable[[_Element], bytes | None],
) -> bytes | None:
    """``parent``'s payload with its one ``picked`` child's payload replaced by
    ``payload_of(child)`` (its size field as long as it was, or as it must be), and a
    leading CRC-32 element, which covers the rest, computed again; ``None`` when no single
    child is picked or ``payload_of`` gives ``None``."""
    children = _elements(data, parent[2], parent[3])
    if not children or sum(map(picked, children)) != 1:
        return None
    parts: list[bytes] = []
    for child in children:
        if child[0] == _CRC32 and child is children[0]:
            continue
        if picked(child):
            payload = payload_of(child)
            if payload is None:
                return None
            parts.append(_element(child[0], payload, like=_size_length(child)))
        else:
            parts.append(data[child[1] : child[3]])
    body = b"".join(parts)
    if children[0][0] == _CRC32:
        body = _element(_CRC32, zlib.crc32(body).to_bytes(4, "little")) + body
    return body


_BEFORE_DISPLAY = frozenset(
    {_PIXEL_WIDTH, _PIXEL_HEIGHT, 0x9A, 0x9D, 0x53B8, 0x53C0, 0x54AA, 0x54BB, 0x54CC, 0x54DD}
)
"""The Video fields Matroska orders before the display size (pixel size, interlacing,
field order, stereo mode, alpha mode, pixel crops); FFmpeg writes it after them."""


def _video_with_display(data: bytes, video: _Element, sar: Fraction, webm: bool) -> bytes | None:
    """The ``Video`` element's payload with ``DisplayWidth``/``DisplayHeight`` (and in
    Matroska ``DisplayUnit``) for ``sar``, in place of any FFmpeg wrote."""
    children = _elements(data, video[2], video[3])
    if not children:
        return None
    sizes = {i: _uint(data, a, b) for i, _, a, b in children if i in (_PIXEL_WIDTH, _PIXEL_HEIGHT)}
    width, height = sizes.get(_PIXEL_WIDTH), sizes.get(_PIXEL_HEIGHT)
    if not width or not height:
        return None
    if webm:  # pixels, rounded as FFmpeg's muxer does (av_rescale: halves up)
        display = [
            _element(_DISPLAY_WIDTH, _uint_bytes(math.floor(width * sar + Fraction(1, 2)))),
            _element(_DISPLAY_HEIGHT, _uint_bytes(height)),
        ]
    else:  # the display aspect ratio, as FFmpeg writes it for Matroska
        aspect = Fraction(width, height) * sar
        display = [
            _element(_DISPLAY_WIDTH, _uint_bytes(aspect.numerator)),
            _element(_DISPLAY_HEIGHT, _uint_bytes(aspect.denominator)),
            _element(_DISPLAY_UNIT, _uint_bytes(_UNIT_ASPECT_RATIO)),
        ]
    kept = [c for c in children if c[0] not in _DISPLAY_FIELDS]
    cut = max((n + 1 for n, c in enumerate(kept) if c[0] in _BEFORE_DISPLAY), default=0)
    raw = [data[c[1] : c[3]] for c in kept]
    return b"".join(raw[:cut] + display + raw[cut:])


def _seekhead_moved(data: bytes, seekhead: _Element, positions: dict[int, int]) -> bytes | None:
    """The ``SeekHead`` element with each position found in ``positions`` replaced by the
    value there, in the bytes it had (so the element keeps its length)."""
    start = seekhead[1]
    out = bytearray(data[start : seekhead[3]])
    children = _elements(data, seekhead[2], seekhead[3])
    if children is None:
        return None
    for ident, _, a, b in children:
        if ident != _SEEK:
            continue
        for field, _, c, d in _elements(data, a, b) or ():
            new = positions.get(_uint(data, c, d)) if field == _SEEK_POSITION else None
            if new is not None:
                if new < 0 or new.bit_length() > 8 * (d - c):
                    return None
                out[c - start : d - start] = new.to_bytes(d - c, "big")
    if children[0][0] == _CRC32 and children[0][3] - children[0][2] == 4:
        crc_at = children[0][2] - start
        out[crc_at : crc_at + 4] = zlib.crc32(bytes(out[crc_at + 4 :])).to_bytes(4, "little")
    return bytes(out)


def _elements(data: bytes, a: int, b: int) -> list[_Element] | None:
    """The elements in ``data[a:b]`` as (id, start, payload start, end), ``None`` unless
    they fill it exactly (no unknown sizes, none running past ``b``)."""
    found: list[_Element] = []
    at = a
    while at < b:
        head = _header(data, at)
        if head is None or head[1] is None or head[2] + head[1] > b:
            return None
        found.append((head[0], at, head[2], head[2] + head[1]))
        at = head[2] + head[1]
    return found


def _size_length(element: _Element) -> int:
    """The length of ``element``'s size field: a rewritten element keeps it where its new
    size fits (FFmpeg writes some sizes longer than they need)."""
    ident, start, payload, _ = element
    return payload - start - (ident.bit_length() + 7) // 8


def _void(total: int) -> bytes:
    """A Void element ``total`` (at least 2) bytes long: its id, its size, zeros."""
    for size_length in range(1, 9):
        payload = total - 1 - size_length
        if payload < (1 << (7 * size_length)) - 1:
            return _element(_VOID, bytes(payload), like=size_length)
    raise ValueError(f"a Void of {total} bytes")


def _element(ident: int, payload: bytes, like: int = 1) -> bytes:
    """An EBML element: ``ident`` (with its length marker), the payload's size as a
    variable-size integer of ``like`` bytes or as many more as it needs, the payload."""
    size = len(payload)
    length = like
    while size >= (1 << (7 * length)) - 1:  # all ones means "unknown size"
        length += 1
    head = ident.to_bytes((ident.bit_length() + 7) // 8, "big")
    return head + (size | (1 << (7 * length))).to_bytes(length, "big") + payload


def _uint_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
