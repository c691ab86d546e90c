"""Temporal models (issue 13): clips, the chunked pipeline in-process, and the checks of an
output against the whole-video result, shared by tests/media, tests/infer and
tests/distributed."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import LOSSLESS

from raypipe.config import ChunkConfig, EncodeConfig, ModelConfig, RunConfig
from raypipe.distributed.chunk_task import segment_uri
from raypipe.distributed.setup import load_model
from raypipe.distributed.stages import (
    chunk_row,
    context_counts,
    decode_stage,
    encode_stage,
    own_pts,
)
from raypipe.infer.factory import SessionSettings
from raypipe.infer.processors import ProcessorContext, ProcessorRunner
from raypipe.infer.temporal_model import TemporalModel
from raypipe.media import assemble, plan_chunks, probe
from raypipe.testing import (
    ClipSpec,
    audio_packets,
    decode_all,
    decode_upright,
    ffmpeg_decode_errors,
    ffprobe_video,
    make_clip,
    start_offset_seconds,
)
from raypipe.testing.temporal import frame_times, interpolated_times

# The awkward kinds, small and with audio: B-frames, open GOPs (leading B-frames of a GOP
# reference the one before), one keyframe (GOPs split with pre-roll), variable frame rate.
TEMPORAL_CLIPS: dict[str, ClipSpec] = {
    "bframes": ClipSpec(n_frames=30, width=96, height=64, bframes=3, gop=12, audio="aac"),
    "open_gop": ClipSpec(
        n_frames=30, width=96, height=64, bframes=3, gop=10, open_gop=True, audio="aac"
    ),
    "single_keyframe": ClipSpec(n_frames=30, width=96, height=64, gop=1000, audio="aac"),
    "vfr": ClipSpec(n_frames=30, width=96, height=64, vfr=True, audio="aac"),
}
TEMPORAL_CHUNK_SIZES = (1, 7, 11, 1000)  # one frame, small, a prime, larger than the video


@pytest.fixture(scope="session")
def temporal_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("temporal_clips")
    return {k: make_clip(directory / f"{k}.mp4", spec) for k, spec in TEMPORAL_CLIPS.items()}


def run_config(model: str | None = None, processor: Any = None, **model_options: Any) -> RunConfig:
    if processor is not None:
        return RunConfig(model=ModelConfig(processor=processor, **model_options))
    return RunConfig(model=ModelConfig(model=model or "builtin:identity", **model_options))


def run_in_process(
    source: Path,
    output: Path,
    cfg: RunConfig,
    chunk_frames: int,
    *,
    encode: EncodeConfig = LOSSLESS,
    context: tuple[int, int] | None = None,
) -> int:
    """The pipeline's stages in this process as the run composes them: the model loaded as
    the driver loads it, chunks planned with its context, decode → the actor's runner →
    encode → assemble. ``context`` overrides the planned context (negative controls).
    Returns the number of chunks."""
    loaded = load_model(cfg)
    temporal = loaded.temporal
    settings = SessionSettings(device="cpu", batch_size=cfg.model.batch_size)
    if loaded.processor is not None:
        runner: Any = ProcessorRunner(loaded.processor, ProcessorContext(settings))
    else:
        assert loaded.spec is not None
        runner = TemporalModel(loaded.data, spec=loaded.spec, device="cpu")
    info = probe(str(source))
    plan = plan_chunks(
        info, ChunkConfig(chunk_frames=chunk_frames), context=context or temporal.context
    )
    work = output.parent / f"{output.name}.work"
    work.mkdir()
    paths = []
    for chunk in plan.chunks:
        row = decode_stage(
            chunk_row(info, chunk, interpolate=temporal.interpolate, work_dir=str(work))
        )
        assert not row["error_type"], row["error_message"]
        before, after = context_counts(row)
        if isinstance(runner, TemporalModel):
            frames = runner.run(row["frames"], cfg.model.batch_size, before=before, after=after)
        else:
            frames = runner.run(row["frames"], before=before, after=after)
        row.update(frames=frames, pts=own_pts(row["pts"], before, after))
        row = encode_stage(row, config=encode)  # writes the segment to the work directory
        assert not row["error_type"], row["error_message"]
        paths.append(segment_uri(str(work), row["chunk_id"]))
    assemble(paths, str(output), info.uri, stereo=info.picture_format.stereo)
    return len(plan)


def chunk_starts(source: Path, chunk_frames: int) -> list[int]:
    """Display indices of the first frame of each chunk of ``source``."""
    plan = plan_chunks(probe(str(source)), ChunkConfig(chunk_frames=chunk_frames))
    starts = [0]
    for c in plan.chunks[:-1]:
        starts.append(starts[-1] + c.n_frames)
    return starts


def assert_timing_and_streams(source: Path, output: Path, *, interpolate: int = 1) -> np.ndarray:
    """The output's frame count and display times (the source's; with interpolation the
    source's and the midpoints, computed from the source's packets), audio packets, start
    offset, duration, average frame rate (frames / duration: doubled with interpolation)
    and a clean decode by ffmpeg; returns the output's frames."""
    out, out_pts, out_tb = decode_all(output)
    times = frame_times(source)  # every frame's and, last, where the last one ends
    n = len(times) - 1
    assert len(out_pts) == interpolate * n, f"{len(out_pts)} frames out, {n} in"
    expected = times[:-1] if interpolate == 1 else interpolated_times(times)
    got = [Fraction(p - out_pts[0]) * out_tb for p in out_pts]
    assert got == [t - expected[0] for t in expected], "display times differ"
    assert [p[3] for p in audio_packets(output)] == [p[3] for p in audio_packets(source)]
    assert start_offset_seconds(output) == pytest.approx(start_offset_seconds(source), abs=1e-3)
    probed, src = ffprobe_video(output), ffprobe_video(source)
    assert probed.duration_seconds == pytest.approx(src.duration_seconds, abs=1e-6)
    duration = times[-1] - times[0]
    assert probed.avg_frame_rate == interpolate * n / duration
    assert ffmpeg_decode_errors(output) == ""
    return out


def source_frames(source: Path) -> np.ndarray:
    """The source's frames as raypipe decodes them."""
    return decode_upright(source)[0]
