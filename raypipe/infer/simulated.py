"""A simulated accelerator for scaling benchmarks and tests: ``sim:hold_ms=N``.

It behaves like a GPU kernel seen from the host: each model call holds for a fixed time
without using the CPU (``time.sleep`` releases the GIL) and returns the frames unchanged.
With it, a benchmark on a small CPU machine can show whether the pipeline keeps N
accelerators busy.
"""

from __future__ import annotations

import time

import numpy as np

from raypipe.errors import ModelNotFoundError

SIM_PREFIX = "sim:"


def is_simulated(model: str) -> bool:
    return model.startswith(SIM_PREFIX)


def parse_hold_seconds(model: str) -> float:
    """``sim:hold_ms=25`` → 0.025 (seconds held per model call)."""
    spec = model[len(SIM_PREFIX) :]
    key, _, value = spec.partition("=")
    try:
        hold_ms = float(value)
    except ValueError:
        hold_ms = -1.0
    if key != "hold_ms" or hold_ms < 0:
        raise ModelNotFoundError(
            f"simulated model {model!r} not understood; expected sim:hold_ms=N "
            "(milliseconds held per batch), e.g. sim:hold_ms=20"
        )
    return hold_ms / 1000.0


class SimulatedModel:
    """Same interface as :class:`raypipe.infer.models.FrameModel`; identity output."""

    providers = ["SimulatedAccelerator"]

    def __init__(self, model: str) -> None:
        self.hold_s = parse_hold_seconds(model)

    def run(self, frames: np.ndarray, batch_size: int) -> np.ndarray:
        for _ in range(0, len(frames), batch_size):
            time.sleep(self.hold_s)
        return frames.copy()

    def warmup(self, height: int, width: int, batch_size: int) -> None:
        time.sleep(self.hold_s)
