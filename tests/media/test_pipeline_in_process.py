"""Exactness of the media stages composed in-process (no Ray): probe → plan → decode →
model → encode → assemble, for every awkward clip kind and chunk size."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import CHUNK_SIZES, assert_exact, model_frames
from pipeline_checks import run_in_process

from raypipe.config import ChunkConfig, EncodeConfig
from raypipe.distributed.chunk_task import ChunkTask, segment_uri
from raypipe.distributed.stages import (
    TASK_CPUS,
    chunk_row,
    decode_batch,
    decode_stage,
    encode_stage,
)
from raypipe.media import Segment, plan_chunks, probe
from raypipe.testing import CLIP_KINDS


@pytest.mark.parametrize("chunk_frames", CHUNK_SIZES)
@pytest.mark.parametrize("kind", sorted(CLIP_KINDS))
def test_exact_in_process(
    clips: dict[str, Path], tmp_path: Path, kind: str, chunk_frames: int
) -> None:
    out = tmp_path / f"out{os.path.splitext(clips[kind])[1]}"
    n_chunks = run_in_process(clips[kind], out, "builtin:invert", chunk_frames)
    assert n_chunks >= 1
    assert_exact(clips[kind], out, "builtin:invert")


def test_size_changing_model_and_matroska_ffv1(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "up.mkv"
    ffv1 = EncodeConfig(codec="ffv1", crf=None, preset=None, pix_fmt="bgr0")
    run_in_process(clips["bframes_aac"], out, "builtin:upscale2x", 7, ffv1)
    from raypipe.testing import decode_all

    frames, pts, _ = decode_all(out)
    src, _, _ = decode_all(clips["bframes_aac"])
    assert frames.shape[1:3] == (2 * src.shape[1], 2 * src.shape[2])
    assert (frames == model_frames("builtin:upscale2x", src)).all()


def test_segments_keep_encoder_timestamps(clips: dict[str, Path], tmp_path: Path) -> None:
    info = probe(str(clips["vfr"]))
    chunk = plan_chunks(info, ChunkConfig(chunk_frames=13)).chunks[1]
    row = decode_stage(chunk_row(info, chunk, work_dir=str(tmp_path / "work")))
    row = encode_stage(row, config=EncodeConfig())
    written = (tmp_path / "work" / f"{chunk.chunk_id}.rpseg").read_bytes()
    assert row["segment_bytes"] == len(written) and "segment" not in row  # no bytes travel
    segment = Segment.from_bytes(written)
    assert sorted(segment.pts.tolist()) == [
        p for p in info.pts if chunk.start_pts <= p < chunk.end_pts
    ]
    assert segment.time_base == info.time_base


def test_decode_batch_is_decode_stage_over_a_one_row_batch(clips: dict[str, Path]) -> None:
    """The pipeline's decode step: a one-row numpy batch in, the row decode_stage gives out
    as a one-row batch, its frames a view of the decoded array (no copy for Ray Data)."""
    info = probe(str(clips["vfr"]))
    chunk = plan_chunks(info, ChunkConfig(chunk_frames=13)).chunks[1]
    row = chunk_row(info, chunk)
    batch = decode_batch({k: np.array([v]) for k, v in row.items()}, threads=TASK_CPUS)
    own = decode_stage(row, threads=TASK_CPUS)
    assert set(batch) == set(own) and all(len(v) == 1 for v in batch.values())
    assert batch["frames"].base is not None and batch["frames"].flags.c_contiguous
    np.testing.assert_array_equal(batch["frames"][0], own["frames"])
    np.testing.assert_array_equal(batch["pts"][0], own["pts"])
    assert batch["chunk_id"][0] == chunk.chunk_id and batch["error_type"][0] == ""
    with pytest.raises(ValueError, match="decode takes one chunk per batch, got 2"):
        decode_batch({k: np.array([v, v]) for k, v in row.items()})


def test_stages_run_as_many_threads_as_the_task_holds(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    """x264 writes its settings into the stream: an encode task (``threads=TASK_CPUS``) runs
    one thread a CPU it holds, not FFmpeg's thread per core of the node."""
    info = probe(str(clips["vfr"]))
    chunk = plan_chunks(info, ChunkConfig(chunk_frames=13)).chunks[0]
    row = chunk_row(info, chunk, work_dir=str(tmp_path / "held"))
    decoded = decode_stage(row, threads=TASK_CPUS)
    own = decode_stage(chunk_row(info, chunk))
    assert (np.asarray(decoded["frames"]) == np.asarray(own["frames"])).all()
    # x264 runs one thread for small frames whatever it is told: frames of 360+ rows.
    frames = np.asarray(decoded["frames"])
    reps = -(-360 // frames.shape[1])
    decoded["frames"] = np.ascontiguousarray(np.tile(frames, (1, reps, reps, 1)))
    held = encode_stage(decoded, config=EncodeConfig(), threads=TASK_CPUS)
    two_dir = str(tmp_path / "two")
    two = encode_stage(
        {**decoded, "work_dir": two_dir}, config=EncodeConfig(), threads=TASK_CPUS + 1
    )
    # the encode stage writes the segment into the chunk's work directory
    segment = Path(ChunkTask.from_row(row).segment_uri).read_bytes()
    segment_two = Path(segment_uri(two_dir, chunk.chunk_id)).read_bytes()
    assert held["segment_bytes"] == len(segment) and two["segment_bytes"] == len(segment_two)
    assert f" threads={TASK_CPUS} ".encode() in segment
    assert f" threads={TASK_CPUS + 1} ".encode() in segment_two
    assert held["encode_cpu_s"] > 0 and held["decode_cpu_s"] > 0


def test_a_decode_task_writes_its_next_chunk_into_the_last_ones_released_array(
    clips: dict[str, Path],
) -> None:
    """The decode stage reuses its process's chunk array (raypipe.recycle) only once the last
    chunk's frames are no longer held; held frames keep their values."""
    info = probe(str(clips["vfr"]))
    first, second, third = plan_chunks(info, ChunkConfig(chunk_frames=8)).chunks[:3]
    assert first.n_frames == second.n_frames == third.n_frames
    expected = {
        c.chunk_id: decode_stage(chunk_row(info, c))["frames"].copy()
        for c in (first, second, third)
    }
    row = decode_stage(chunk_row(info, first))
    address = row["frames"].ctypes.data
    del row  # Ray has copied the frames out
    # memory freed would go to the next request of its size; the kept array does not
    blocker = np.empty_like(expected[first.chunk_id])
    held = decode_stage(chunk_row(info, second))
    assert held["frames"].ctypes.data == address
    other = decode_stage(chunk_row(info, third))  # the second's frames are still held
    assert not np.shares_memory(other["frames"], held["frames"])
    np.testing.assert_array_equal(held["frames"], expected[second.chunk_id])
    np.testing.assert_array_equal(other["frames"], expected[third.chunk_id])
    del blocker
