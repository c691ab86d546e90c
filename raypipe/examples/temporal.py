"""Example temporal processors (:mod:`raypipe.infer.temporal`), one of each kind, in numpy.

- :class:`TemporalMean` (``window = (1, 1)``): each frame becomes the rounded mean of itself
  and its neighbours; a call gets ``1 + m + 1`` frames and returns ``m``.
- :class:`RunningAverage` (``warmup_frames = 8``): a recurrent state,
  ``out_t = (x_t + out_{t-1} + 1) // 2`` with ``out_0 = x_0``; ``reset()`` forgets it, and
  raypipe warms it up on the 8 frames before each chunk. A difference in the state at
  least halves every frame, so after 8 frames of warm-up a chunk is within 1 level of a
  sequential run.
- :class:`Midpoints` (``interpolate = 2``): a call gets ``m + 1`` frames and returns the
  ``m`` rounded means of neighbours, the frames halfway between them.

All integer arithmetic, for uint8 and uint16 frames alike, so results are exact.
"""

from __future__ import annotations

import numpy as np

from raypipe.infer.processors import Processor, ProcessorContext


class TemporalMean(Processor):
    """Each frame: the rounded mean of frames ``t - 1, t, t + 1``."""

    window = (1, 1)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        before, after = self.window or (0, 0)
        span = before + 1 + after
        m = len(frames) - before - after
        x = frames.astype(np.uint32)
        total = x[:m].copy()
        for k in range(1, span):
            total += x[k : k + m]
        return ((total + span // 2) // span).astype(frames.dtype)


class RunningAverage(Processor):
    """``out_t = (x_t + out_{t-1} + 1) // 2``, ``out_0 = x_0``, kept across calls."""

    warmup_frames = 8

    def setup(self, ctx: ProcessorContext) -> None:
        self.reset()

    def reset(self) -> None:
        self.last: np.ndarray | None = None

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        out = np.empty_like(frames)
        for i, frame in enumerate(frames):
            if self.last is None:
                self.last = frame.copy()
            else:
                mean = (frame.astype(np.uint32) + self.last + 1) // 2
                self.last = mean.astype(frames.dtype)
            out[i] = self.last
        return out


class Midpoints(Processor):
    """The rounded mean of each two neighbouring frames: ``m + 1`` frames in, ``m`` out."""

    interpolate = 2

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        x = frames.astype(np.uint32)
        return ((x[:-1] + x[1:] + 1) // 2).astype(frames.dtype)
