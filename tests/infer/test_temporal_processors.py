"""Temporal user processors in-process (issue 13): class attributes window, warmup_frames and
interpolate; chunks with context give the whole sequence's result; identities and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raypipe.errors import ConfigError, ProcessorError
from raypipe.examples.temporal import Midpoints, RunningAverage, TemporalMean
from raypipe.infer.factory import SessionSettings
from raypipe.infer.processor_refs import processor_identity, processor_ref
from raypipe.infer.processors import (
    Processor,
    ProcessorContext,
    ProcessorRunner,
    apply_processor,
)
from raypipe.infer.temporal import Temporal

FRAMES = np.random.default_rng(5).integers(0, 256, size=(19, 6, 10, 3), dtype=np.uint8)


def runner(processor: Any, batch_size: int = 4) -> ProcessorRunner:
    ctx = ProcessorContext(SessionSettings(device="cpu", batch_size=batch_size))
    return ProcessorRunner(processor_ref(processor), ctx)


def chunked(processor: Any, frames: np.ndarray, cuts: list[int]) -> np.ndarray:
    run = runner(processor)  # one runner for every chunk, as one actor runs many
    want_before, want_after = run.temporal.context
    outs, n = [], len(frames)
    for a, b in zip(cuts, cuts[1:]):
        lo, hi = max(0, a - want_before), min(n, b + want_after)
        outs.append(run.run(frames[lo:hi], before=a - lo, after=hi - b))
    return np.concatenate(outs)


CUTS = [0, 1, 2, 9, 10, 19]


def test_window_processor_chunks_equal_the_whole_and_numpy() -> None:
    whole = apply_processor(TemporalMean, FRAMES)
    idx = np.clip(np.arange(19)[:, None] + np.arange(-1, 2)[None], 0, 18)
    expected = (FRAMES[idx].astype(np.uint32).sum(axis=1) + 1) // 3
    assert np.array_equal(whole, expected)
    assert np.array_equal(chunked(TemporalMean, FRAMES, CUTS), whole)


def test_interpolating_processor_doubles_the_frames() -> None:
    whole = apply_processor(Midpoints, FRAMES)
    assert isinstance(whole, np.ndarray) and len(whole) == 38
    assert np.array_equal(whole[0::2], FRAMES)
    mids = (FRAMES[:-1].astype(np.uint32) + FRAMES[1:] + 1) // 2
    assert np.array_equal(whole[1:-1:2], mids) and np.array_equal(whole[-1], FRAMES[-1])
    assert np.array_equal(chunked(Midpoints, FRAMES, CUTS), whole)


def test_recurrent_processor_is_reset_and_warmed_up_per_chunk() -> None:
    whole = apply_processor(RunningAverage, FRAMES)
    got = chunked(RunningAverage, FRAMES, [0, 7, 8, 19])
    assert np.array_equal(got[:8], whole[:8])  # from frame 0, or warmed up from it
    assert np.abs(got.astype(int) - whole).max() <= 1
    cold = chunked(RunningAverage, FRAMES[8:], [0, 11])  # the last chunk without warm-up
    assert np.abs(cold.astype(int) - whole[8:]).max() > 1


def test_a_recurrent_processor_state_never_leaks_between_chunks() -> None:
    calls: list[str] = []

    class Counting(RunningAverage):
        def reset(self) -> None:
            calls.append("reset")
            super().reset()

    run = runner(Counting)
    a = run.run(FRAMES[:10], before=0)
    b = run.run(FRAMES[:10], before=0)  # the same chunk again: the same result
    assert np.array_equal(a, b) and calls == ["reset", "reset", "reset"]  # setup, 2 chunks


def test_declared_attributes_are_checked_on_the_driver() -> None:
    class Wide(TemporalMean):
        window = (1, 2, 3)  # type: ignore[assignment]

    with pytest.raises(ConfigError, match=r"processor .*Wide.*: window must be \[before, after\]"):
        processor_ref(Wide)

    class Table(TemporalMean):
        output = "tensor"

    with pytest.raises(ConfigError, match="temporal processors output frames"):
        processor_ref(Table)

    class Both(TemporalMean):
        interpolate = 2

    with pytest.raises(ConfigError, match=r"interpolate=2 takes .* window \[0, 1\]"):
        processor_ref(Both)
    assert processor_ref(Midpoints).temporal == Temporal(window=(0, 1), interpolate=2)
    assert processor_ref(RunningAverage).temporal == Temporal(warmup_frames=8, recurrent=True)


def test_a_processor_returning_the_context_too_is_told_what_is_expected() -> None:
    class Everything(Processor):
        window = (1, 1)

        def __call__(self, frames: np.ndarray) -> np.ndarray:
            return frames  # all of them, context included

    with pytest.raises(ProcessorError, match=r"for 6 uint8 frames \(4 and their window's "):
        runner(Everything).run(FRAMES[:4])


def test_an_interpolating_processor_that_changes_the_size_is_named() -> None:
    """It failed as an untyped ValueError from the interleaving, naming no processor."""

    class HalfMidpoints(Processor):
        interpolate = 2

        def __call__(self, frames: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(frames[1:, ::2, ::2])

    with pytest.raises(ProcessorError, match=r"processor .*HalfMidpoints returned in-between "
                       r"frames of 3x5 px for source frames of 6x10"):  # fmt: skip
        apply_processor(HalfMidpoints, FRAMES)


def test_temporal_attributes_are_part_of_the_identity(tmp_path: Path) -> None:
    file = tmp_path / "p.py"
    file.write_text(
        "import raypipe\nclass P(raypipe.Processor):\n    window = (1, 1)\n"
        "    def __call__(self, frames):\n        return frames[1:-1]\n"
    )
    ref = processor_ref(f"{file}:P")
    assert ref.temporal == Temporal(window=(1, 1)) and "window=1,1" in ref.identity
    file.write_text(file.read_text().replace("(1, 1)", "(2, 2)"))
    assert processor_ref(f"{file}:P").identity != ref.identity  # edited file: other sha too

    class Narrow(TemporalMean):
        pass

    wide = type("Narrow", (TemporalMean,), {"window": (2, 2), "__module__": __name__})
    wide.__qualname__ = Narrow.__qualname__  # same name and file, another window
    assert processor_identity(wide) != processor_identity(Narrow)
    assert processor_identity(Narrow).endswith("window=1,1 warmup=0 recurrent=0 interpolate=1")
