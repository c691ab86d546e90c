"""Timestamps of an interpolated (frame-doubled) video, in exact integer arithmetic.

An interpolating model puts one new frame between every two source frames
(:mod:`raypipe.infer.temporal`). Source frame ``t`` keeps its time and the new frame after
it is shown at the midpoint of ``t``'s display interval ``[pts_t, pts_{t+1})`` (the last
frame's interval ends at the video's end). Midpoints of integer timestamps are integers in
half the time base, so the output's time base is the source's halved and every timestamp is
exact, whatever the frame rate (variable rates too): source frame ``t`` at ``2 pts_t``, the
new frame at ``pts_t + pts_{t+1}``. Each frame lasts half its source frame, the average
frame rate doubles, and the duration is the source's.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np


def doubled_time_base(time_base: Fraction) -> Fraction:
    """The time base of a frame-doubled stream: half the source's."""
    return Fraction(time_base) / 2


def doubled_timing(
    pts: np.ndarray, end_pts: int, time_base: Fraction
) -> tuple[np.ndarray, int, Fraction]:
    """``(pts, end_pts, time_base)`` of the ``2n`` frames interpolated from frames at
    ``pts`` (n, source time base) whose last one ends at ``end_pts``: source frame ``t`` at
    ``2 pts[t]``, the frame after it at ``pts[t] + pts[t + 1]`` (``end_pts`` after the
    last), all in :func:`doubled_time_base`; the end is ``2 end_pts``."""
    src = np.asarray(pts, dtype=np.int64)
    if len(src) == 0 or not np.all(np.diff(src) > 0) or end_pts <= int(src[-1]):
        raise ValueError(
            f"pts must rise and end before end_pts={end_pts}, got {src[:4].tolist()}..."
        )
    nxt = np.append(src[1:], np.int64(end_pts))
    out = np.empty(2 * len(src), dtype=np.int64)
    out[0::2], out[1::2] = 2 * src, src + nxt
    return out, 2 * int(end_pts), doubled_time_base(time_base)
