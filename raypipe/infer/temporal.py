"""Temporal models and processors: what they need around each frame, as data.

Some models look at more than one frame. raypipe cuts a video into chunks, so a model that
looks at neighbours would see a seam, a reset state or a missing in-between frame at every
chunk boundary unless each chunk brings its neighbours along. :class:`Temporal` says what a
model (through its :class:`~raypipe.infer.sidecar.ModelSpec`) or a user processor (through
class attributes) needs, and the planner decodes that much *context* around each chunk
(:func:`raypipe.media.plan.plan_chunks`, ``context=``): frames of the neighbouring chunks'
ranges, decoded from the keyframe at or before the first of them. What comes out is exactly
the chunk's own frames (twice as many for interpolation).

Three kinds, one at a time:

- **window** ``(before, after)``: output frame ``t`` is computed from frames
  ``t - before .. t + after``. At the video's edges the first/last frame is repeated, so a
  chunk sees the windows the whole video would give it.
- **recurrent** (``state`` in a model's spec; ``warmup_frames`` alone on a processor, which
  keeps its own state): frames go through one at a time in display order, the state starts
  from zeros, and ``warmup_frames`` K frames before the chunk are run first to warm the state
  up (their outputs dropped). The first chunk starts at frame 0, exactly as a sequential
  run; later chunks match it as far as K frames of history do.
- **interpolate** ``2``: a model of two frames (window ``(0, 1)``) that returns the frame
  halfway between them. The output holds ``2n`` frames: frame ``2t`` is source frame ``t``,
  frame ``2t + 1`` the model's frame between ``t`` and ``t + 1``, and after the last source
  frame that frame again (it is repeated at its own midpoint).
  :func:`raypipe.media.retime.doubled_timing` gives the timestamps.

The helpers here are numpy only: :func:`edge_padded` completes a chunk's context at the
video's edges, :func:`interleave` puts sources and in-between frames in display order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from raypipe.errors import ConfigError

WINDOW_LAYOUTS: tuple[str, ...] = ("time", "channels")
"""How a window model takes its frames: a time axis (``N, T, C, H, W`` for NCHW models,
``N, T, H, W, C`` for NHWC), or the frames stacked on the channel axis (``3 T`` channels,
oldest first)."""
INTERPOLATE_FACTORS: tuple[int, ...] = (1, 2)
"""``1``: no interpolation; ``2``: one new frame between every two."""
MAX_CONTEXT_FRAMES = 1024
"""The most frames a window side or a warm-up may ask for: context is decoded per chunk."""


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_window(value: Any, where: str = "window") -> tuple[int, int] | None:
    """``value`` as a window ``(before, after)`` (two integers >= 0), or ``None``."""
    if value is None:
        return None
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) != 2
        or not all(_is_int(v) and 0 <= v <= MAX_CONTEXT_FRAMES for v in value)
    ):
        raise ConfigError(
            f"{where} must be [before, after], two integers within 0..{MAX_CONTEXT_FRAMES} "
            f"(frames before and after each output frame), got {value!r}"
        )
    return int(value[0]), int(value[1])


def check_warmup(value: Any, where: str = "warmup_frames") -> int:
    """``value`` as a number of warm-up frames (an integer >= 0)."""
    if not _is_int(value) or not 0 <= value <= MAX_CONTEXT_FRAMES:
        raise ConfigError(
            f"{where} must be an integer within 0..{MAX_CONTEXT_FRAMES} (frames run before "
            f"each chunk to warm a recurrent state up), got {value!r}"
        )
    return int(value)


def check_interpolate(value: Any, where: str = "interpolate") -> int:
    """``value`` as an interpolation factor (1 or 2)."""
    if not _is_int(value) or value not in INTERPOLATE_FACTORS:
        raise ConfigError(
            f"{where} must be 2 (one new frame between every two: twice the frames) or 1 "
            f"(none), got {value!r}"
        )
    return int(value)


def check_state(value: Any) -> tuple[tuple[str, str], ...]:
    """``value`` (a mapping or pairs ``{input name: output name}``) as sorted pairs."""
    pairs = list(value.items()) if isinstance(value, Mapping) else value
    try:
        checked = tuple(sorted((k, v) for k, v in pairs))
    except (TypeError, ValueError):
        checked = ()
    names = [n for pair in checked for n in pair]
    if (
        (value and not checked)
        or not all(isinstance(n, str) and n for n in names)
        or len(set(names)) != len(names)
    ):
        raise ConfigError(
            "state must map each state input of the model to the output that feeds it on "
            f'the next frame, {{"in_name": "out_name", ...}}, all names different, got {value!r}'
        )
    return checked


@dataclass(frozen=True, kw_only=True)
class Temporal:
    """What a model or processor needs around each frame (see the module docstring).

    ``window``: frames ``(before, after)`` each output frame is computed from;
    ``warmup_frames``: frames run before a chunk to warm a recurrent state up;
    ``recurrent``: frames go through one at a time in order, with a state;
    ``interpolate``: 2 for a model of two frames that returns the one between them.
    """

    window: tuple[int, int] = (0, 0)
    warmup_frames: int = 0
    recurrent: bool = False
    interpolate: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", check_window(self.window) or (0, 0))
        object.__setattr__(self, "warmup_frames", check_warmup(self.warmup_frames))
        object.__setattr__(self, "interpolate", check_interpolate(self.interpolate))
        if self.interpolate == 2 and self.window != (0, 1):
            raise ConfigError(
                f"interpolate=2 takes the two frames around each new one: window [0, 1] "
                f"(or none), got window {list(self.window)}"
            )
        if self.recurrent and self.window != (0, 0):
            raise ConfigError(
                f"a recurrent state with a window ({list(self.window)}) is not supported; "
                "use one of them"
            )
        if self.warmup_frames and not self.recurrent:
            raise ConfigError(
                f"warmup_frames={self.warmup_frames} warms a recurrent state up; declare the "
                "state too (a model's spec: state {in: out}; a processor: warmup_frames alone)"
            )

    @classmethod
    def of(
        cls,
        *,
        window: Any = None,
        warmup_frames: Any = 0,
        recurrent: bool = False,
        interpolate: Any = 1,
    ) -> Temporal:
        """A :class:`Temporal` from declared values; an interpolation's window is implied."""
        interpolate = check_interpolate(interpolate)
        window = check_window(window)
        if window is None:
            window = (0, 1) if interpolate == 2 else (0, 0)
        return cls(
            window=window,
            warmup_frames=warmup_frames,
            recurrent=recurrent,
            interpolate=interpolate,
        )

    @property
    def active(self) -> bool:
        """Whether frames are not simply one in, one out."""
        return self.recurrent or self.window != (0, 0) or self.interpolate != 1

    @property
    def context(self) -> tuple[int, int]:
        """Frames to decode before and after each chunk."""
        return max(self.window[0], self.warmup_frames), self.window[1]

    @property
    def span(self) -> int:
        """Frames in one window: ``before + 1 + after``."""
        return self.window[0] + 1 + self.window[1]

    def describe(self) -> str:
        """A short text naming the settings (for identities and messages)."""
        return (
            f"window={self.window[0]},{self.window[1]} warmup={self.warmup_frames} "
            f"recurrent={int(self.recurrent)} interpolate={self.interpolate}"
        )


NONE = Temporal()
"""Frames one in, one out."""


def processor_temporal(cls: type, name: str) -> Temporal:
    """What processor class ``cls`` declares (class attributes ``window = (B, A)``,
    ``warmup_frames = K``, ``interpolate = 2``), checked; ``name`` names it in errors."""
    try:
        return Temporal.of(
            window=getattr(cls, "window", None),
            warmup_frames=getattr(cls, "warmup_frames", 0),
            recurrent=bool(getattr(cls, "warmup_frames", 0)),
            interpolate=getattr(cls, "interpolate", 1),
        )
    except ConfigError as e:
        raise ConfigError(f"processor {name}: {e}") from e


def edge_padded(
    frames: np.ndarray, *, before: int, after: int, want_before: int, want_after: int
) -> np.ndarray:
    """A chunk's frames with ``want_before``/``want_after`` frames of context each side.

    ``frames`` holds ``before`` decoded context frames, the chunk, and ``after`` more. The
    planner decodes all the context a model wants except where the video ends, so any
    shortfall is at the video's edge: it is filled by repeating the first/last frame.
    """
    if before > want_before or after > want_after:
        raise ValueError(
            f"got {before}/{after} context frames, more than the {want_before}/{want_after} wanted"
        )
    head, tail = want_before - before, want_after - after
    if not head and not tail:
        return frames
    parts = [np.repeat(frames[:1], head, axis=0), frames, np.repeat(frames[-1:], tail, axis=0)]
    return np.concatenate(parts)


def interleave(sources: np.ndarray, between: np.ndarray) -> np.ndarray:
    """``sources[0], between[0], sources[1], between[1], ...``: ``2n`` frames of one size."""
    if sources.shape != between.shape or sources.dtype != between.dtype:
        raise ValueError(
            f"in-between frames {between.dtype}{between.shape} do not match the source frames "
            f"{sources.dtype}{sources.shape}; an interpolating model must keep the frame size"
        )
    out = np.empty((2 * len(sources), *sources.shape[1:]), dtype=sources.dtype)
    out[0::2], out[1::2] = sources, between
    return out
