"""The base class of user processors (:mod:`raypipe.infer.processors` says how they run).

Apart from the machinery that runs processors, so that resolving a processor reference
(:mod:`raypipe.infer.processor_refs`) can check a class against it without importing the
runner: ``processor_base`` ← ``processor_refs`` ← ``processors``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from raypipe.infer.processors import ProcessorContext


class Processor:
    """Base class of user processors (see the module docstring)."""

    output: ClassVar[str] = "image"  # "image": frames out (video); "tensor": dict (Parquet)
    version: ClassVar[str] = ""  # bump to make earlier results of this processor stale
    window: ClassVar[tuple[int, int] | None] = None  # temporal: frames (before, after)
    warmup_frames: ClassVar[int] = 0  # temporal: a state warmed up by K frames per chunk
    interpolate: ClassVar[int] = 1  # temporal: 2 returns the frames between neighbours

    def setup(self, ctx: ProcessorContext) -> None:
        """Once per actor, before the first frames: load models with ``ctx.session``."""

    def reset(self) -> None:
        """Before each chunk of a processor with ``warmup_frames``: forget the state."""

    def __call__(self, frames: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        """``frames`` (n, H, W, 3) uint8 RGB (uint16 from deep sources) -> frames (n, h, w,
        3) of the same dtype, or a dict of arrays with first dimension n when
        ``output = "tensor"``."""
        raise NotImplementedError(f"{type(self).__qualname__} does not define __call__")
