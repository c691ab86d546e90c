"""Temporal models and processors through a real local Ray with two logical GPUs (issue 13):
chunks spread over two inference actors give what the whole video gives in one piece. The
big matrix of clip kinds and chunk sizes runs in-process (tests/media/
test_temporal_in_process.py); this is the small one through Ray, the CLI's ``--window``
included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import lossless_cli_args, lossless_options
from temporal_checks import (
    assert_timing_and_streams,
    chunk_starts,
    source_frames,
    temporal_clips,  # noqa: F401 - fixture
)

import raypipe
from raypipe.cli import main
from raypipe.errors import ConfigError
from raypipe.examples.temporal import TemporalMean
from raypipe.infer.builtin import builtin_bytes
from raypipe.infer.processors import apply_processor
from raypipe.infer.sidecar import builtin_spec
from raypipe.infer.temporal_model import TemporalModel
from raypipe.testing.temporal import sequential_frames


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_local: None) -> None:
    return None


def _run(source: Path, out: Path, stats: Path, chunk_frames: int, **options: object) -> dict:
    raypipe.process_video(
        str(source),
        str(out),
        chunk_frames=chunk_frames,
        workers=2,
        batch_size=4,
        stats_path=str(stats),
        quiet=True,
        **lossless_options(),
        **options,
    )
    doc: dict = json.loads(stats.read_text())
    assert doc["totals"]["workers"] == 2  # two actors, one per logical GPU
    # which actor gets which chunk is Ray's choice; every chunk ran on one of the two GPUs
    assert {c["cuda_visible_devices"] for c in doc["chunks"]} <= {"0", "1"}
    return doc


@pytest.mark.parametrize(
    ("model", "kind", "chunk_frames"),
    [("denoise3", "open_gop", 4), ("ema", "single_keyframe", 5), ("interp2x", "vfr", 3)],
)
def test_temporal_builtins_through_ray_equal_the_whole_video(
    temporal_clips: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    model: str,
    kind: str,
    chunk_frames: int,
) -> None:
    source, out = temporal_clips[kind], tmp_path / "out.mp4"
    doc = _run(source, out, tmp_path / "stats.json", chunk_frames, model=f"builtin:{model}")
    interpolate = 2 if model == "interp2x" else 1
    assert doc["totals"]["frames"] == interpolate * 30
    got = assert_timing_and_streams(source, out, interpolate=interpolate)
    expected = sequential_frames(f"builtin:{model}", source_frames(source))
    if model == "ema":
        first_end = chunk_starts(source, chunk_frames)[1]
        assert np.array_equal(got[:first_end], expected[:first_end])
        assert np.abs(got.astype(int) - expected).max() <= 1
    else:
        assert np.array_equal(got, expected)


def test_cli_window_and_a_temporal_processor_through_ray(
    temporal_clips: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    source = temporal_clips["bframes"]
    out = tmp_path / "wide.mp4"
    code = main(["run", str(source), str(out), "--model", "builtin:denoise3", "--window", "2,2",
                 "--chunk-frames", "4", "--workers", "2", "--batch-size", "4", "-q",
                 *lossless_cli_args()])  # fmt: skip
    assert code == 0
    spec = builtin_spec("denoise3")
    wide = TemporalModel(
        builtin_bytes("denoise3"), spec=spec.__class__(window=(2, 2)), device="cpu"
    )
    expected = wide.run(source_frames(source), 4)  # the whole video in one piece, batches of 4
    assert np.array_equal(assert_timing_and_streams(source, out), expected)

    out = tmp_path / "mean.mp4"
    _run(
        source, out, tmp_path / "stats.json", 4, processor="raypipe.examples.temporal:TemporalMean"
    )
    got = assert_timing_and_streams(source, out)
    assert np.array_equal(got, apply_processor(TemporalMean, source_frames(source)))


def test_read_video_chunks_pieces_refuse_temporal_models() -> None:
    import raypipe.data as rd

    with pytest.raises(ConfigError, match=r"is temporal \(window=1,1 .*read_video_chunks rows"):
        rd.map_processor(None, "builtin:denoise3")  # type: ignore[arg-type]
