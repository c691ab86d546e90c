"""Temporal models through the pipeline's stages in-process (issue 13): on clips with
B-frames, open GOPs, one keyframe (GOPs split with pre-roll) and a variable frame rate, for
chunks of 1, 7, 11 frames and longer than the video, lossless, the chunked output equals the
whole video run in one piece: denoise3 exactly, ema within one level (exactly on the first
chunk), interp2x with 2n frames at the computed midpoints. Audio packets are the source's
and ffmpeg decodes every output without a word (temporal_checks.assert_timing_and_streams).
The Ray runs are in tests/distributed/test_temporal_ray.py."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from temporal_checks import (
    TEMPORAL_CHUNK_SIZES,
    assert_timing_and_streams,
    chunk_starts,
    run_config,
    run_in_process,
    source_frames,
    temporal_clips,  # noqa: F401 - fixture
)

from raypipe.examples.temporal import Midpoints, RunningAverage, TemporalMean
from raypipe.infer.processors import apply_processor
from raypipe.testing.temporal import sequential_frames

KINDS = ("bframes", "open_gop", "single_keyframe", "vfr")


@functools.lru_cache(maxsize=16)
def whole_video(source: Path, model: str) -> np.ndarray:
    """``model`` over the whole source in one piece, frame by frame, in this process."""
    return sequential_frames(model, source_frames(source))


@pytest.mark.parametrize("chunk_frames", TEMPORAL_CHUNK_SIZES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("model", ["denoise3", "ema", "interp2x"])
def test_temporal_builtins_chunked_equal_the_whole_video(
    temporal_clips: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    model: str,
    kind: str,
    chunk_frames: int,
) -> None:
    source, out = temporal_clips[kind], tmp_path / "out.mp4"
    n_chunks = run_in_process(source, out, run_config(f"builtin:{model}"), chunk_frames)
    assert n_chunks == len(chunk_starts(source, chunk_frames))
    interpolate = 2 if model == "interp2x" else 1
    got = assert_timing_and_streams(source, out, interpolate=interpolate)
    expected = whole_video(source, f"builtin:{model}")
    if model != "ema":
        bad = [i for i in range(len(got)) if not np.array_equal(got[i], expected[i])]
        assert not bad, f"frames {bad[:10]} differ from the whole video's"
        if model == "interp2x":
            assert np.array_equal(got[0::2], source_frames(source))  # even frames: the source
        return
    first_end = chunk_starts(source, chunk_frames)[1] if n_chunks > 1 else len(got)
    assert np.array_equal(got[:first_end], expected[:first_end]), "the first chunk is not exact"
    assert np.abs(got.astype(int) - expected).max() <= 1


def test_without_context_the_seams_show(
    temporal_clips: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The negative controls: chunks decoded without context (denoise3) or without a warm-up
    (ema) differ from the whole video, so the tests above can fail."""
    source = temporal_clips["open_gop"]
    out = tmp_path / "seams.mp4"
    run_in_process(source, out, run_config("builtin:denoise3"), 7, context=(0, 0))
    got = assert_timing_and_streams(source, out)
    expected = whole_video(source, "builtin:denoise3")
    bad = {i for i in range(len(got)) if not np.array_equal(got[i], expected[i])}
    starts = chunk_starts(source, 7)[1:]
    assert bad == {s for s in starts} | {s - 1 for s in starts}
    cold = tmp_path / "cold.mp4"
    run_in_process(source, cold, run_config("builtin:ema", warmup_frames=0), 7)
    diff = np.abs(
        assert_timing_and_streams(source, cold).astype(int) - whole_video(source, "builtin:ema")
    )
    assert diff.max() > 1


PROCESSORS = {
    "TemporalMean": TemporalMean,
    "RunningAverage": RunningAverage,
    "Midpoints": Midpoints,
}


@pytest.mark.parametrize("kind", ["open_gop", "vfr"])
@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_temporal_processors_chunked_equal_the_whole_video(
    temporal_clips: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    name: str,
    kind: str,
) -> None:
    source, out = temporal_clips[kind], tmp_path / "out.mp4"
    processor = PROCESSORS[name]
    run_in_process(source, out, run_config(processor=processor), 7)
    got = assert_timing_and_streams(source, out, interpolate=processor.interpolate)
    expected = apply_processor(processor, source_frames(source))  # the whole video at once
    assert isinstance(expected, np.ndarray)
    if name == "RunningAverage":
        first_end = chunk_starts(source, 7)[1]
        assert np.array_equal(got[:first_end], expected[:first_end])
        assert np.abs(got.astype(int) - expected).max() <= 1
    else:
        assert np.array_equal(got, expected)
