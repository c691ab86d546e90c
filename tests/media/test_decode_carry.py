"""A decode task goes on with the decoder its previous chunk left open (``carry``): the
chunks of a split GOP are then decoded once, not each from the keyframe again. The frames
must be those of a decode from the keyframe, and anything that does not follow on (another
chunk, another file, a changed file, another setting, a stale decoder) decodes afresh."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from raypipe.config import ChunkConfig
from raypipe.distributed.stages import CARRY_SWITCH, chunk_row, decode_stage
from raypipe.media import decode, decode_chunk, plan_chunks, probe
from raypipe.testing.reference import decode_all


@pytest.fixture(autouse=True)
def _no_carried_decoder() -> Iterator[None]:
    decode.release_carried()
    yield
    decode.release_carried()


def _split_plan(path: Path, frames: int = 5):  # type: ignore[no-untyped-def]
    info = probe(str(path))
    plan = plan_chunks(info, ChunkConfig(chunk_frames=frames, split_gops=True))
    return info, plan


@pytest.mark.parametrize("kind", ["single_keyframe", "open_gop", "hevc_mov", "vfr"])
def test_carried_chunks_equal_a_decode_from_the_start(clips: dict[str, Path], kind: str) -> None:
    info, plan = _split_plan(clips[kind])
    assert len({c.seek_pts for c in plan.chunks}) < len(plan.chunks)  # GOPs were split
    reference, ref_pts, _ = decode_all(clips[kind])
    carried, frames, pts = [], [], []
    for chunk in plan.chunks:
        got = decode_chunk(info, chunk, carry=True)
        fresh = decode_chunk(info, chunk)  # no carry: leaves the carried decoder alone
        assert np.array_equal(got.frames, fresh.frames) and np.array_equal(got.pts, fresh.pts)
        carried.append(got.carried)
        frames.append(got.frames)
        pts.extend(got.pts.tolist())
    assert carried == [False] + [True] * (len(plan.chunks) - 1)
    assert pts == ref_pts
    assert np.array_equal(np.concatenate(frames), reference)


def test_what_does_not_follow_on_decodes_afresh(clips: dict[str, Path], tmp_path: Path) -> None:
    info, plan = _split_plan(clips["single_keyframe"])
    c0, c1, c2, c3 = plan.chunks[:4]
    expected = {c.index: decode_chunk(info, c).frames for c in (c0, c1, c2, c3)}

    def check(chunk, carried: bool, **kwargs) -> None:  # type: ignore[no-untyped-def]
        got = decode_chunk(info, chunk, carry=True, **kwargs)
        assert got.carried is carried, chunk.index
        assert np.array_equal(got.frames, expected[chunk.index])

    check(c0, False)
    check(c2, True)  # a chunk skipped: the decoder goes on through its frames
    check(c3, True)
    check(c1, False)  # backwards
    check(c2, False, threads=1)  # another decoder setting
    check(c3, True, threads=1)

    # another file with the same frames: its own decoder
    other = shutil.copy(clips["single_keyframe"], tmp_path / "copy.mp4")
    other_info = probe(str(other))
    check(c0, False)
    got = decode_chunk(other_info, plan.chunks[1], carry=True)
    assert not got.carried and np.array_equal(got.frames, expected[1])


def test_a_decoder_before_the_keyframe_is_not_carried(clips: dict[str, Path]) -> None:
    """Seeking to the chunk's keyframe decodes fewer frames than going on from an earlier
    GOP (``open_gop``: keyframes every 10 frames, chunks of 5)."""
    info, plan = _split_plan(clips["open_gop"])
    by_start = {info.pts.index(c.start_pts): c for c in plan.chunks}
    first, next_gop, same_gop = by_start[0], by_start[10], by_start[15]
    assert next_gop.seek_pts == same_gop.seek_pts == info.pts[10]
    assert not decode_chunk(info, first, carry=True).carried
    got = decode_chunk(info, next_gop, carry=True)
    assert not got.carried
    assert np.array_equal(got.frames, decode_chunk(info, next_gop).frames)
    got = decode_chunk(info, same_gop, carry=True)
    assert got.carried
    assert np.array_equal(got.frames, decode_chunk(info, same_gop).frames)


def test_a_changed_file_or_an_old_decoder_is_not_carried(
    clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = Path(shutil.copy(clips["single_keyframe"], tmp_path / "clip.mp4"))
    info, plan = _split_plan(path)
    c0, c1, c2 = plan.chunks[:3]
    assert not decode_chunk(info, c0, carry=True).carried
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # rewritten in place
    got = decode_chunk(info, c1, carry=True)
    assert not got.carried and np.array_equal(got.frames, decode_chunk(info, c1).frames)
    monkeypatch.setattr(decode, "CARRY_SECONDS", -1.0)  # every carried decoder too old
    got = decode_chunk(info, c2, carry=True)
    assert not got.carried and np.array_equal(got.frames, decode_chunk(info, c2).frames)


def test_a_decoder_that_is_not_where_it_says_falls_back(clips: dict[str, Path]) -> None:
    info, plan = _split_plan(clips["single_keyframe"])
    c0, c1, c2 = plan.chunks[:3]
    decode_chunk(info, c0, carry=True)
    carried = decode._carried
    assert carried is not None and carried.next_pts == c1.start_pts
    carried.next_pts = c2.start_pts  # it stands before c1's frames, not c2's: its first
    # frame is not the one it claims (going on would still give c2's frames; the check
    # is there for a decoder that lost its place)
    got = decode_chunk(info, c2, carry=True)
    assert not got.carried
    assert np.array_equal(got.frames, decode_chunk(info, c2).frames)
    assert decode._carried is not None and decode._carried.next_pts == c2.end_pts


def test_context_chunks_overlap_and_decode_afresh(clips: dict[str, Path]) -> None:
    info = probe(str(clips["single_keyframe"]))
    plan = plan_chunks(info, ChunkConfig(chunk_frames=5, split_gops=True), context=(1, 1))
    for chunk in plan.chunks[:3]:
        got = decode_chunk(info, chunk, carry=True)
        assert not got.carried
        assert np.array_equal(got.frames, decode_chunk(info, chunk).frames)


def test_the_decode_stage_carries_unless_switched_off(
    clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    info, plan = _split_plan(clips["single_keyframe"])
    rows = [chunk_row(info, chunk) for chunk in plan.chunks[:3]]

    def carried() -> list[bool]:
        decode.release_carried()
        out = [decode_stage(row) for row in rows]
        assert all(not o["error_type"] for o in out)
        expected = [decode_chunk(info, c).frames for c in plan.chunks[:3]]
        assert all(np.array_equal(o["frames"], e) for o, e in zip(out, expected))
        return [bool(o["decode_carried"]) for o in out]

    assert carried() == [False, True, True]
    monkeypatch.setenv(CARRY_SWITCH, "0")
    assert carried() == [False, False, False]
