"""Clock jumps in MPEG-TS and MPEG-PS sources, closed as ``ffmpeg`` closes them.

MPEG-TS and MPEG-PS carry a running clock, not a timeline. A recording joined from two
(``cat`` of two broadcast recordings, or of an HLS download's segments across a
discontinuity; a DVR's recording across a splice; a camcorder's files copied into one)
jumps its clock where they join: forward by any amount, or back, which FFmpeg's MPEG-TS
demuxer reads as a jump forward over its 26.5-hour wrap when it goes back by more than a
minute. ``ffmpeg`` closes a jump of more than :data:`JUMP_SECONDS` in such formats (its
``-dts_delta_threshold``): the frames after it follow the frame before it, and every other
stream moves with them. Kept, a jump was an hour of frozen picture on the output's
timeline, or an output that failed as it was written, after all the work.

The probe finds the jumps in the video's frame times (:func:`find_jumps`) and gives every
frame its closed time (:func:`closed`), so chunks, the output's timestamps, its frame rate
and duration are all on the closed timeline. What reads the source again maps the times it
reads: the decoder its frames' (:func:`closed`) and its seeks (:func:`source_time`), the
assembly the copied streams' packets and the captions' pictures (:func:`shift_seconds`).
A jump is a triple ``(before, after, shift)`` in the video's time base: the last frame's
time before it, the first frame's after it, and how far every time from the middle of the
two on moves back (the jumps before it included). Other streams' packets around a jump
fall on either side of that middle: they lie within a second or so of the frames around
it, and the jump is longer than :data:`JUMP_SECONDS`.

A jump back by less than a minute leaves times that repeat or go back: raypipe orders a
video's frames by their times, so such a source is refused before any work, with the
``ffmpeg`` remux that closes its jumps (:func:`jump_back_problem`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np

Jump = tuple[int, int, int]  # (before, after, shift), video time base ticks

JUMP_SECONDS = 10
"""A gap between two frames longer than this is a jump of the clock (``ffmpeg``'s
``-dts_delta_threshold``, 10 s by default), in formats whose clock may jump
(:func:`clock_may_jump`)."""
BACK_SECONDS = Fraction(1, 10)
"""Decode times that go back by more than this are a jump back (``ffmpeg``'s rule too)."""

_TS_DISCONT = 0x0200  # AVFMT_TS_DISCONT: "Format allows timestamp discontinuities"


def clock_may_jump(container: Any) -> bool:
    """Whether ``container``'s format allows its clock to jump (FFmpeg's
    ``AVFMT_TS_DISCONT``: MPEG-TS and MPEG-PS)."""
    return bool(container.format.flags & _TS_DISCONT)


def find_jumps(pts: Sequence[int], time_base: Fraction) -> tuple[Jump, ...]:
    """The jumps of a video whose frames are at ``pts`` (sorted, ``time_base`` ticks):
    every gap between two frames longer than :data:`JUMP_SECONDS`, closed so that the
    frame after it follows the frame before it by the video's usual frame step (the
    median step between frames)."""
    if len(pts) < 2:
        return ()
    steps = np.diff(np.asarray(pts, dtype=np.int64))
    limit = JUMP_SECONDS / Fraction(time_base)
    at = np.flatnonzero(steps > limit)
    if not len(at):
        return ()
    step = int(np.median(steps[steps <= limit])) if np.any(steps <= limit) else 1
    jumps: list[Jump] = []
    shift = 0
    for i in at:
        before, after = int(pts[i]), int(pts[i + 1])
        shift += after - before - max(1, step)
        jumps.append((before, after, shift))
    return tuple(jumps)


def _shift(t: Fraction | int, jumps: Sequence[Jump]) -> int:
    """How far the source time ``t`` (video time base, any fraction of a tick) moves back
    on the closed timeline: the shift of the last jump whose middle it is at or after."""
    shift = 0
    for before, after, moved in jumps:
        if 2 * t < before + after:
            break
        shift = moved
    return shift


def closed(t: int, jumps: Sequence[Jump]) -> int:
    """The source time ``t`` (video time base) on the closed timeline."""
    return t - _shift(t, jumps)


def source_time(c: int, jumps: Sequence[Jump]) -> int:
    """The source time of the frame at ``c`` on the closed timeline (:func:`closed`
    undone: a frame after a jump is at or after that jump's first frame's closed time)."""
    for _, after, moved in reversed(jumps):
        if c >= after - moved:
            return c + moved
    return c


def shift_seconds(seconds: Fraction, jumps: Sequence[Jump], time_base: Fraction) -> Fraction:
    """How far a source time of any stream (``seconds``) moves back on the closed
    timeline, in seconds (:func:`_shift`)."""
    return _shift(Fraction(seconds) / Fraction(time_base), jumps) * Fraction(time_base)


def to_text(jumps: Sequence[Jump]) -> str:
    """``jumps`` as a row's or a JSON document's text column (``""`` for none)."""
    return json.dumps([list(j) for j in jumps]) if jumps else ""


def from_text(text: str) -> tuple[Jump, ...]:
    """:func:`to_text` undone."""
    return tuple((int(a), int(b), int(c)) for a, b, c in json.loads(text)) if text else ()


def describe(jumps: Sequence[Jump], time_base: Fraction) -> tuple[str, ...]:
    """One line per jump, for the run to show after "left out" (none when there are
    none): the time the closed timeline leaves out of the source's clock."""
    lines = []
    earlier = 0
    for before, after, moved in jumps:
        lines.append(
            f"the {float((moved - earlier) * time_base):.3f}s jump of the source's clock from "
            f"{float(before * time_base):.3f}s to {float(after * time_base):.3f}s (recordings "
            "joined?): closed as ffmpeg closes it, the video goes on at "
            f"{float(closed(after, jumps) * time_base):.3f}s"
        )
        earlier = moved
    return tuple(lines)


def jump_back_problem(uri: str, at: Fraction, back: Fraction, format_name: str) -> str:
    """The refusal of a source whose decode times go back by ``back`` seconds at ``at``,
    with the remux that closes its jumps into a container that holds what its format does
    (MPEG-TS again; Matroska for MPEG-PS, whose DVD subtitles MPEG-TS cannot hold)."""
    suffix = ".ts" if "mpegts" in format_name else ".mkv"
    return (
        f"input '{uri}' has its clock jump back {float(back):.3f}s at {float(at):.3f}s "
        "(recordings joined?), and raypipe orders frames by their times. "
        f"`ffmpeg -i IN -map 0 -c copy OUT{suffix}` closes such jumps; process OUT{suffix}"
    )
