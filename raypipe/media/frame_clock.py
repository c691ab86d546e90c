"""Counting a video's frames on its frame rate's grid: the clock x264 is given.

H.264 writes its encoder's time base into its headers (the VUI timing), so an encoder
given the container's clock (MP4's 1/12800, Matroska's 1/1000) says 12800 or 1000 fps
there, which a stream extracted with ``ffmpeg -c copy out.h264`` shows, and remuxed it
lasts a few microseconds. ``ffmpeg``'s transcode counts in frames (a time base of
1/rate). raypipe does too where every frame's time, counted in frames at the video's rate
and rounded, is a different number, rising: a constant rate, whether the frames fall on
whole ticks (MP4's 512 ticks of 1/12800 at 25 fps) or the container's clock rounds them
(Matroska's milliseconds at 29.97 fps) or they start off the grid (a video that starts
23 ms in, after the audio's priming). The encoder's packets come back to their frames'
exact times by number (:class:`FrameClock`), so nothing is rounded in the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

_EXACT_LIMIT = 1 << 61  # beyond it, integer products would overflow int64: Python ints


def frame_numbers(pts: np.ndarray | list[int], step: Fraction) -> np.ndarray:
    """Each time in ``pts`` (time base ticks) counted in frames of ``step`` ticks, rounded
    to the nearest (half up), in exact integer arithmetic."""
    num, den = step.numerator, step.denominator
    ticks = np.asarray(pts, dtype=np.int64)
    if len(ticks) and int(np.max(np.abs(ticks))) * 2 * den >= _EXACT_LIMIT:
        return np.asarray([(2 * int(p) * den + num) // (2 * num) for p in ticks], dtype=object)
    return (2 * ticks * den + num) // (2 * num)


def frame_step(pts: np.ndarray | list[int], rate: Fraction, time_base: Fraction) -> Fraction:
    """Time base ticks of one frame where the frames at ``pts`` can be counted in frames
    (each rounds to a different number, rising): of one frame at the average ``rate`` and
    the distance between most of the frames, the one whose frame numbers fall closest to
    the frames' times; 1 where neither counts them: a variable rate where two frames fall
    in one frame's time, or frames closer than a tick.

    Both are needed. The average rate is the frames' where the container's clock rounds
    them (Matroska's milliseconds at 29.97 fps: 33 and 34 ms apart, an average of 33.37).
    The frames' distance is theirs where the average is not: a video with a gap, or an MP4
    cut with an edit list that shows its last frame longer (frames 40 ms apart read 24.81
    fps, and x264's headers said so: a sweep)."""
    ticks = np.asarray(pts, dtype=np.int64)
    candidates = [1 / (rate * time_base)] if rate and len(ticks) else []
    if len(ticks) > 1:
        values, counts = np.unique(np.diff(ticks), return_counts=True)
        if 2 * int(counts.max()) >= len(ticks) - 1:  # most frames: the video's rate
            candidates.append(Fraction(int(values[int(np.argmax(counts))])))
    best, off_best = Fraction(1), float("inf")
    for step in candidates:
        if step <= 1:
            continue
        numbers = frame_numbers(ticks, step)
        if not bool(np.all(np.diff(numbers) > 0)):
            continue
        # how far the numbers' times fall from the frames', in frames (the first candidate
        # wins a tie)
        off = float(np.max(np.abs(numbers.astype(np.float64) * float(step) - ticks))) / float(step)
        if off < off_best - 1e-9:
            best, off_best = step, off
    return best


@dataclass(frozen=True)
class FrameClock:
    """An encoder's clock for one segment: its time base and its frames' times on it, and
    the way back to the source's times. ``step`` 1: the source's own clock."""

    step: Fraction
    pts: np.ndarray  # the source's times of the segment's frames
    numbers: np.ndarray  # the same on the encoder's clock

    @classmethod
    def of(cls, pts: np.ndarray, step: Fraction) -> FrameClock:
        pts = np.asarray(pts, dtype=np.int64)
        numbers = pts if step == 1 else frame_numbers(pts, step).astype(np.int64)
        if len(numbers) > 1 and not bool(np.all(np.diff(numbers) > 0)):
            raise ValueError(f"two frames on one tick of {step} (a video's plan said not)")
        return cls(step=step, pts=pts, numbers=numbers)

    @property
    def exact(self) -> bool:
        """Whether every frame falls on a whole tick of the encoder's clock: then any time
        on it (a dts before the first frame's) maps back by multiplying."""
        if self.step.denominator != 1:
            return False
        return bool(np.all(self.numbers * int(self.step) == self.pts))

    def time_base(self, source: Fraction) -> Fraction:
        return source * self.step

    def duration(self, ticks: int) -> int:
        """A duration of ``ticks`` source ticks on the encoder's clock (at least 1)."""
        return max(1, round(ticks / self.step)) if self.step != 1 else int(ticks)

    def back(self) -> dict[int, int]:
        """Encoder time -> the source's, for the segment's frames."""
        return dict(zip(self.numbers.tolist(), self.pts.tolist(), strict=True))
