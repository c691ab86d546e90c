"""Every frame's timestamp of a constant-rate Matroska/WebM video track, from its cues.

The cues (:mod:`raypipe.media.mkv_index`) give the keyframes' times only. A constant-rate
track's frames sit on a grid (:class:`FrameGrid`): the timestamps its frame times have once
rounded to the file's ticks, ``round(g / (rate x tick))``, halves away from zero, as
FFmpeg rescales them, the rate being the one whose duration the track's
``DefaultDuration`` is. :func:`scan_cues` names the frames from the first one to the last
keyframe on that grid, reads the blocks from the last keyframe on (the last cluster or
two: where the stream ends and how long its last frame lasts) and checks the lot against
FFmpeg's first demuxed packets and the cues; anything that disagrees gives ``None``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from raypipe.media.mkv_index import MkvLayout, tail_blocks
from raypipe.media.mp4_index import IndexScan

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


def scan_cues(container: Any, video: Any, f: Any, layout: MkvLayout) -> IndexScan | None:
    """``video`` (an open PyAV stream of a Matroska container, not yet read) scanned from
    ``layout``: every frame's pts in display order (the grid of the track's default
    duration from the first frame to the last keyframe, then the packets after it), the
    cue points as keyframes, and the duration of the frame shown last.

    Only the first packets are demuxed (FFmpeg's view) and the blocks from the last cue's
    cluster on read from ``f`` (the same file, seekable; :func:`tail_blocks`); they must
    agree with the grid and the cues, else ``None``: the stream is not the
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
    blocks = tail_blocks(f, layout)
    if blocks is None:
        return None
    head = _packets(container, video, _HEAD_PACKETS)
    if not head:
        return None
    tail = [(b.pts, b.key, b.duration) for b in blocks]
    starts = [i for i, (p, key, _) in enumerate(tail) if key and p == layout.cue_times[-1]]
    tail = tail[starts[0] :] if starts else []  # the cluster may start before the keyframe
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
    if not tail or any(k for _, k, _ in tail[1:]):
        return None  # the last cue's keyframe is not in its cluster, or keyframes follow it
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
