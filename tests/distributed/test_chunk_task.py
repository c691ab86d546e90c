"""The chunk task (no Ray): a row is a ChunkTask encoded, and decodes back to the same task."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import pytest

from raypipe.distributed.chunk_task import (
    RUN_FILE,
    SEGMENT_SUFFIX,
    ChunkTask,
    is_work,
    output_of,
    placeholder_row,
    remove_work,
    run_dir_for,
    work_dir_for,
    work_root,
)
from raypipe.media.picture import PictureFormat
from raypipe.media.plan import Chunk, Context

PICTURE = PictureFormat(coded_width=64, coded_height=48, pix_fmt="yuv420p10le", rotation_degrees=90)
CONTEXT = Context(before=1, after=2, start_pts=0, end_pts=700, seek_pts=0, last_pts=600)


@pytest.mark.parametrize(
    ("seek", "keep", "context", "rate", "interpolate"),
    [
        (None, None, None, Fraction(0), 1),  # from the start, every frame, no rate known
        (100, (0, 3, 5), None, Fraction(30000, 1001), 1),  # a GOP piece, sampled
        (0, None, CONTEXT, Fraction(25), 2),  # a temporal chunk, interpolated
    ],
)
def test_row_round_trip(
    seek: int | None,
    keep: tuple[int, ...] | None,
    context: Context | None,
    rate: Fraction,
    interpolate: int,
) -> None:
    chunk = Chunk(video_id="v-1", index=3, start_pts=100, end_pts=600, n_frames=5,
                  seek_pts=seek, last_pts=500, context=context)  # fmt: skip
    task = ChunkTask(
        uri="s3://b/v.mp4", chunk=chunk, stream_index=1, width=64, height=48,
        time_base=Fraction(1, 90000), rate=rate, picture=PICTURE, first_index=30, keep=keep,
        interpolate=interpolate, work_dir="s3://b/.v.mp4.raypipe-work",
    )  # fmt: skip
    row = task.to_row()
    assert all(isinstance(v, (str, int)) for v in row.values())  # plain columns for Arrow
    assert ChunkTask.from_row(row) == task
    # a row after a stage (more columns) still decodes to the task
    assert ChunkTask.from_row({**row, "frames": None, "decode_s": 0.1}) == task
    assert task.segment_uri == f"s3://b/.v.mp4.raypipe-work/v-1-000003{SEGMENT_SUFFIX}"
    offsets = list(keep) if keep is not None else list(range(5))
    assert task.frame_indices().tolist() == [30 + k for k in offsets]
    assert is_work(row) and not is_work({**row, "error_type": "DecodeError"})


def test_a_placeholder_has_a_chunk_rows_columns_and_is_no_work() -> None:
    chunk = Chunk(video_id="v", index=0, start_pts=0, end_pts=1, n_frames=1, seek_pts=None,
                  last_pts=0)  # fmt: skip
    real = ChunkTask(
        uri="v.mp4", chunk=chunk, stream_index=0, width=2, height=2, time_base=Fraction(1),
        rate=Fraction(0), picture=PictureFormat(coded_width=2, coded_height=2),
    ).to_row()  # fmt: skip
    placeholder = {**placeholder_row("v", "v.mp4"), "kind": "video"}
    assert set(placeholder) == set(real)
    assert {k: type(v) for k, v in placeholder.items()} == {k: type(v) for k, v in real.items()}
    assert not is_work(placeholder)


def test_runs_with_other_settings_keep_their_segments_apart(tmp_path: Path) -> None:
    """Two runs on one output at once with other settings (nested OUTPUT_DIRs, a ``raypipe
    run`` into an archive's folder) wrote segments of the same names into one work folder,
    and each assembled an output of both models' frames, which reruns skipped as finished
    (a sweep). Each run's segments go into a folder of its own in the work directory; the
    work directory goes with the last of them."""
    from raypipe.reuse import Provenance

    out = str(tmp_path / "v.mp4")
    key_a, key_b = Provenance(key="A", source="1"), Provenance(key="B", source="1")
    a, b = run_dir_for(out, key_a), run_dir_for(out, key_b)
    assert a != b and run_dir_for(out, Provenance(key="A", source="1")) == a
    assert work_root(a) == work_root(b) == work_dir_for(out) and work_root(work_dir_for(out)) == (
        work_dir_for(out)
    )
    assert output_of(a) == output_of(work_dir_for(out)) == out  # the encoder's container
    for folder, held in ((a, b"A"), (b, b"B")):
        Path(folder).mkdir(parents=True)
        Path(folder, f"v-000000{SEGMENT_SUFFIX}").write_bytes(held)
    assert remove_work(a) == 0 and not Path(a).exists()
    assert Path(b, f"v-000000{SEGMENT_SUFFIX}").read_bytes() == b"B"
    assert remove_work(b) == 0 and not Path(work_dir_for(out)).exists()


def test_segments_of_the_layout_before_run_folders_are_removed_with_their_note(
    tmp_path: Path,
) -> None:
    """A work directory an older raypipe left (its run.json and segments loose in it) is
    another run's work: removed, its note said, and the work directory left to this run."""
    from raypipe.distributed.planning import RUN_FILE, _reusable_segments
    from raypipe.reuse import Provenance

    out = str(tmp_path / "v.mp4")
    root = Path(work_dir_for(out))
    root.mkdir()
    (root / RUN_FILE).write_text(Provenance(key="old", source="s").to_text(with_parts=True))
    (root / f"v-000000{SEGMENT_SUFFIX}").write_bytes(b"x")
    now = Provenance(key="new", source="s")
    own = run_dir_for(out, now)
    other = Path(run_dir_for(out, Provenance(key="other", source="s")))
    other.mkdir()
    (other / RUN_FILE).write_text(Provenance(key="other", source="s").to_text(with_parts=True))
    Path(own).mkdir()
    (Path(own) / RUN_FILE).write_text(now.to_text(with_parts=True))
    (Path(own) / f"v-000001{SEGMENT_SUFFIX}").write_bytes(b"y")
    assert _reusable_segments(str(root), own, now) == ({"v-000001"}, "the settings changed")
    assert [p.name for p in root.iterdir()] == [Path(own).name]  # its own folder alone


def _stored_chunk(out: str, index: int) -> ChunkTask:
    """Chunk ``index`` of a video whose output is ``out``, its segment stored in its run's
    folder (made, with its record)."""
    from raypipe.distributed.stages import _store
    from raypipe.reuse import Provenance

    folder = run_dir_for(out, Provenance(key="A", source="1"))
    chunk = Chunk(video_id="v", index=index, start_pts=0, end_pts=1, n_frames=1,
                  seek_pts=None, last_pts=0)  # fmt: skip
    task = ChunkTask(
        uri="v.mp4", chunk=chunk, stream_index=0, width=2, height=2, time_base=Fraction(1),
        rate=Fraction(0), picture=PictureFormat(coded_width=2, coded_height=2), work_dir=folder,
    )  # fmt: skip
    Path(folder).mkdir(parents=True)
    (Path(folder) / RUN_FILE).write_text("{}")
    assert _store(task, b"segment") == 7
    return task


def test_a_segment_that_lands_after_its_run_stopped_is_not_kept(tmp_path: Path) -> None:
    """A library caller's failed or interrupted ``process_video`` removed its run's folder,
    then an actor finished the chunk it had and wrote its segment into the folder, made
    again, for good (Ray stays up in a notebook; a sweep). A segment whose run folder has
    lost its record is removed with the folder, and the chunk fails; one whose record is
    there is kept."""
    from raypipe.distributed.stages import _store
    from raypipe.errors import StorageError

    out = str(tmp_path / "v.mp4")
    task = _stored_chunk(out, 4)
    folder = task.work_dir
    assert Path(task.segment_uri).read_bytes() == b"segment"
    remove_work(folder)  # the run stops
    gone = (r"the work folder .* was removed while chunk 4 was being made \(the run stopped, "
            r"or a run with other settings on the same output took the output over\); its "
            r"segment was not kept")  # fmt: skip
    with pytest.raises(StorageError, match=gone):
        _store(task, b"segment")
    assert list(tmp_path.iterdir()) == []
    # a whole work directory (raypipe.data's write_videos) has no record, and keeps it
    whole = ChunkTask.from_row({**task.to_row(), "work_dir": work_dir_for(out)})
    assert _store(whole, b"segment") == 7


def test_a_segment_whose_output_folder_was_removed_does_not_make_it_again(
    tmp_path: Path,
) -> None:
    """The output's folder removed while a chunk was being made: the segment's write made
    it again, with every folder above it, and left it behind, empty, after the run failed
    (or, removed before the first chunk, the run wrote its output there; a sweep). The
    chunk fails, naming the folder, and nothing is made."""
    from raypipe.distributed.stages import _store
    from raypipe.errors import StorageError

    task = _stored_chunk(str(tmp_path / "sub" / "v.mp4"), 2)
    shutil.rmtree(tmp_path / "sub")  # the user's rm -r
    gone = rf"^the output's folder {tmp_path}/sub was removed while chunk 2 was being made"
    with pytest.raises(StorageError, match=gone):
        _store(task, b"segment")
    assert list(tmp_path.iterdir()) == []
