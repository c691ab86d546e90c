"""A chunk that starts inside a GOP is decoded from the GOP's keyframe and the frames before
it are dropped (pre-roll): the decoder skips the pictures no other picture refers to
(non-reference B-frames) while it pre-rolls, and the chunk's frames are still those of a
decode from the file's start."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from raypipe.config import ChunkConfig
from raypipe.media import decode, decode_chunk, plan_chunks, probe
from raypipe.testing import ClipSpec, make_clip
from raypipe.testing.reference import decode_all


@pytest.mark.parametrize("kind", ["single_keyframe", "open_gop", "hevc_mov", "vfr", "bframes_aac"])
def test_a_chunk_inside_a_gop_is_a_decode_from_the_start(clips: dict[str, Path], kind: str) -> None:
    info = probe(str(clips[kind]))
    plan = plan_chunks(info, ChunkConfig(chunk_frames=5, split_gops=True))
    inside = [c for c in plan.chunks if c.index and c.seek_pts != c.start_pts]
    assert inside  # GOPs were split
    reference, ref_pts, _ = decode_all(clips[kind])
    for chunk in inside:
        got = decode_chunk(info, chunk)  # afresh: a seek to the keyframe and a pre-roll
        first = ref_pts.index(chunk.start_pts)
        assert got.pts.tolist() == ref_pts[first : first + chunk.n_frames], chunk.index
        assert np.array_equal(got.frames, reference[first : first + chunk.n_frames]), chunk.index


def _shown_before_the_chunk(path: Path, *, preroll: bool) -> tuple[int, int]:
    """Frames the decoder gives before the last chunk's first, with the pre-roll skipping
    or not, and the frames the chunk starts after."""
    info = probe(str(path))
    chunk = plan_chunks(info, ChunkConfig(chunk_frames=8, split_gops=True)).chunks[-1]
    source = decode._open(info, chunk, "cpu", 1, chunk.seek_pts)
    try:
        source.preroll_until = chunk.start_pts if preroll else None
        before = itertools.takewhile(lambda f: f.pts < chunk.start_pts, source.frames)
        return sum(1 for _ in before), info.n_frames - chunk.n_frames
    finally:
        source.close()


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_the_preroll_skips_the_pictures_nothing_refers_to(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "one_gop.mp4"
    make_clip(path, ClipSpec(n_frames=48, gop=48, bframes=3, codec=codec))
    decoded, dropped = _shown_before_the_chunk(path, preroll=False)
    assert decoded == dropped == 40
    skipping, _ = _shown_before_the_chunk(path, preroll=True)
    assert 0 < skipping < decoded
