"""Context frames for temporal models (issue 13): planned around each chunk from its
neighbours' ranges, decoded exactly across keyframes, open GOPs and split GOPs, without
changing the chunk itself, and bounded by the window, not the video."""

from __future__ import annotations

import dataclasses
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from temporal_checks import TEMPORAL_CHUNK_SIZES, temporal_clips  # noqa: F401 - fixture

from raypipe.config import ChunkConfig
from raypipe.distributed.stages import chunk_row, context_counts, decode_stage, own_pts
from raypipe.media import Context, decode_chunk, plan_chunks, probe
from raypipe.testing import ClipSpec, decode_upright, make_clip

CONTEXT = (2, 3)


@pytest.mark.parametrize("chunk_frames", TEMPORAL_CHUNK_SIZES)
@pytest.mark.parametrize("kind", ["bframes", "open_gop", "single_keyframe", "vfr"])
def test_context_is_decoded_exactly_from_the_neighbours(
    temporal_clips: dict[str, Path],  # noqa: F811
    kind: str,
    chunk_frames: int,
) -> None:
    source = temporal_clips[kind]
    info = probe(str(source))
    frames, pts, _ = decode_upright(source)
    plain = plan_chunks(info, ChunkConfig(chunk_frames=chunk_frames))
    plan = plan_chunks(info, ChunkConfig(chunk_frames=chunk_frames), context=CONTEXT)
    assert [dataclasses.replace(c, context=None) for c in plan.chunks] == list(plain.chunks)
    first, n = 0, info.n_frames
    for chunk in plan.chunks:
        a, b = first, first + chunk.n_frames
        lo, hi = max(0, a - CONTEXT[0]), min(n, b + CONTEXT[1])
        context = chunk.context
        if (lo, hi) == (a, b):  # the chunk is the whole video
            assert context is None
        else:
            assert context is not None and (context.before, context.after) == (a - lo, hi - b)
        row = decode_stage(chunk_row(info, chunk))
        assert not row["error_type"], row["error_message"]
        assert context_counts(row) == (a - lo, hi - b)
        assert np.array_equal(row["frames"], frames[lo:hi]), chunk.chunk_id
        assert row["pts"].tolist() == pts[lo:hi]
        assert own_pts(row["pts"], a - lo, hi - b).tolist() == pts[a:b]
        first = b


def test_no_context_where_the_chunk_is_the_video_and_a_context_round_trips(
    temporal_clips: dict[str, Path],  # noqa: F811
) -> None:
    info = probe(str(temporal_clips["bframes"]))
    (whole,) = plan_chunks(info, ChunkConfig(chunk_frames=1000), context=(4, 4)).chunks
    assert whole.context is None and whole.decode_range == whole
    chunk = plan_chunks(info, ChunkConfig(chunk_frames=7), context=(1, 1)).chunks[1]
    assert chunk.context is not None
    assert Context.from_json(chunk.context.to_json()) == chunk.context
    assert chunk.decode_range.n_frames == chunk.n_frames + 2
    with pytest.raises(ValueError, match="context must be two frame counts"):
        plan_chunks(info, context=(-1, 0))


def _peak_bytes(info: object, chunk: object) -> tuple[int, int]:
    tracemalloc.start()
    try:
        decoded = decode_chunk(info, chunk)  # type: ignore[arg-type]
        return tracemalloc.get_traced_memory()[1], len(decoded.frames)
    finally:
        tracemalloc.stop()


def test_decoded_context_is_bounded_by_the_window_not_the_video(tmp_path: Path) -> None:
    """One keyframe, 120 frames of 256x144: a late chunk decodes from frame 0 but keeps only
    its own frames and its context; its peak memory does not grow with the video."""
    spec = ClipSpec(n_frames=120, width=256, height=144, gop=1000, bframes=2)
    long = make_clip(tmp_path / "long.mp4", spec)
    short = make_clip(tmp_path / "short.mp4", dataclasses.replace(spec, n_frames=30))
    frame_bytes = 256 * 144 * 3
    peaks = {}
    for name, path in (("long", long), ("short", short)):
        info = probe(str(path))
        plan = plan_chunks(info, ChunkConfig(chunk_frames=8), context=(3, 3))
        chunk = plan.chunks[-2]  # late in the video: every earlier frame is decoded first
        assert chunk.context is not None and chunk.context.seek_pts is None
        peak, kept = _peak_bytes(info, chunk)
        assert kept == chunk.n_frames + 3 + 3
        peaks[name] = peak
        assert peak < (kept + 3) * frame_bytes, f"{name}: {peak / frame_bytes:.1f} frames"
    print(f"peak traced bytes per frame size: { {k: v / frame_bytes for k, v in peaks.items()} }")
    assert peaks["long"] < 120 * frame_bytes / 6  # a whole decode would hold 120 frames
    assert abs(peaks["long"] - peaks["short"]) < 2 * frame_bytes
