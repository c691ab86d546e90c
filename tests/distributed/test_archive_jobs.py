"""The archive's jobs: an input listed twice is refused the second time, under an id of its
own, so its early failure row can never end the first listing's video in the runner; and
the jobs' plan blocks start short, so a large archive starts as soon as a small one."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from raypipe.distributed.archive import _jobs
from raypipe.inputs import InputItem
from raypipe.media.probe import make_video_id


def test_an_input_listed_twice_gets_a_refused_job_with_its_own_id() -> None:
    items = [
        InputItem("s3://bucket/a.mp4", "a.mp4"),
        InputItem("s3://bucket/b.mp4", "b.mp4"),
        InputItem("s3://bucket/a.mp4", "a-again.mp4"),
        InputItem("s3://bucket/a.mp4", "a-third.mp4"),
    ]
    items.append(InputItem("s3://bucket/b.mp4", "b.mp4"))  # the same line again
    jobs = _jobs(items, "/out")
    assert [j.error for j in jobs[:2]] == ["", ""]
    twice = "input 's3://bucket/a.mp4' is listed more than once; it is processed once"
    for job, output in zip(jobs[2:4], ("a-again.mp4", "a-third.mp4")):
        assert job.error == (  # the output dropped is named (a sweep)
            f"{twice}, into 'a.mp4': this line's output '{output}' is not written (an input "
            "makes one output; copy the file to make another)"
        )
    assert jobs[4].error == twice.replace("a.mp4", "b.mp4")
    ids = [j.video_id for j in jobs]
    assert ids[0] == make_video_id("s3://bucket/a.mp4")  # the first listing keeps the plain id
    assert len(set(ids)) == 5, ids


def test_an_output_that_is_its_input_is_refused(tmp_path: Path) -> None:
    """`raypipe archive in in --overwrite` would replace the originals for good (ffmpeg
    refuses to write over its input too); another extension is another file, and fine."""
    (tmp_path / "a.mp4").write_bytes(b"x")
    items = [
        InputItem(str(tmp_path / "a.mp4"), "a.mp4"),
        InputItem(str(tmp_path / "a.mp4"), "a.mkv"),
    ]
    jobs = _jobs(items[:1], str(tmp_path)) + _jobs(items[1:], str(tmp_path))
    assert jobs[0].error.startswith(f"output '{tmp_path / 'a.mp4'}' is the input; write the")
    assert jobs[1].error == ""


def test_a_manifests_two_rows_on_one_output_name_the_first_and_no_own_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two manifest rows naming one output: the second's refusal called the first's output
    "its own name", which a named output is not (a sweep). A listed folder's extension
    was an empty entry in the extension line: "(, .txt)"."""
    items = [
        InputItem("/in/a.mp4", "x/one.mkv", named=True),
        InputItem("/in/sub/clip.mp4", "x/one.mkv", named=True),
    ]
    jobs = _jobs(items, str(tmp_path))
    assert jobs[1].error == (
        "output 'x/one.mkv' is claimed by 2 inputs: it is written for '/in/a.mp4'; give this "
        "one another output"
    )
    renamed = [InputItem("/in/sub1", "sub1.mp4", renamed=True),
               InputItem("/in/notes.txt", "notes.mp4", renamed=True)]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        _jobs(renamed, str(tmp_path))
    assert "have an extension raypipe does not write (.txt, none)" in caplog.text


def test_an_output_that_is_another_rows_input_is_refused(tmp_path: Path) -> None:
    """A manifest that wrote a.mp4 to b.mp4 and b.mp4 to a.mp4 replaced the original b.mp4
    (a sweep): every output that is a listed input, through a link too, is refused."""
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / "link.mp4").symlink_to(tmp_path / "c.mp4")
    items = [
        InputItem(str(tmp_path / "a.mp4"), "b.mp4"),
        InputItem(str(tmp_path / "b.mp4"), "a.mp4"),
        InputItem(str(tmp_path / "c.mp4"), "d.mp4"),
        InputItem(str(tmp_path / "d.mp4"), "link.mp4"),  # missing input: its own error
        InputItem("s3://bucket/x.mp4", "y.mp4"),
    ]
    jobs = _jobs(items, str(tmp_path))
    assert jobs[0].error == (
        f"output '{tmp_path / 'b.mp4'}' is another input of this archive "
        f"('{tmp_path / 'b.mp4'}'); raypipe does not replace its inputs: give this one "
        "another output"
    )
    assert jobs[1].error.startswith(f"output '{tmp_path / 'a.mp4'}' is another input")
    assert jobs[2].error == "" and jobs[4].error == ""
    assert jobs[3].error.startswith(f"output '{tmp_path / 'link.mp4'}' is another input of "
                                    f"this archive ('{tmp_path / 'c.mp4'}')")  # fmt: skip
    crossed = [InputItem("s3://b/in/x.mp4", "y.mp4"), InputItem("s3://b/in/y.mp4", "z.mp4")]
    remote = _jobs(crossed, "s3://b/in")
    assert remote[0].error.startswith("output 's3://b/in/y.mp4' is another input of this")
    assert remote[1].error == ""


@pytest.mark.parametrize("n", [1, 2, 5, 127, 128, 129, 200, 2000, 20000])
def test_plan_blocks_start_with_one_video_and_stay_few(n: int) -> None:
    from raypipe.distributed.dataset import PLAN_BLOCKS, plan_block_sizes

    sizes = plan_block_sizes(n)
    full = -(-n // PLAN_BLOCKS)
    assert sum(sizes) == n and sizes[0] == 1 and min(sizes) >= 1
    # doubling up to the full size (a large archive's first videos are planned as soon as
    # a small one's), then full blocks; the last may be short
    ramp = [min(2**i, full) for i in range(len(sizes))]
    assert sizes[:-1] == ramp[:-1] and sizes[-1] <= ramp[-1]
    assert len(sizes) <= PLAN_BLOCKS + full.bit_length()


def test_a_second_archive_on_one_output_dir_is_refused_at_once(
    tmp_path: Path, no_ray: None
) -> None:
    """Two archive runs on one folder removed each other's segments (videos failed with
    "segment ... is missing from the work directory") and each wrote its report over the
    other's (a sweep). The first holds the folder; the second fails before Ray starts,
    naming it; the hold goes with the run, leaving nothing in the folder."""
    import os

    import ray

    import raypipe
    from raypipe.distributed.archive import LOCK_NAME, output_dir_lock
    from raypipe.errors import ConfigError
    from raypipe.testing import ClipSpec, make_clip

    src = tmp_path / "src"
    src.mkdir()
    make_clip(src / "a.mp4", ClipSpec(n_frames=4))
    out = tmp_path / "out"
    out.mkdir()
    with output_dir_lock(str(out)):
        assert (out / LOCK_NAME).read_text() == f"pid {os.getpid()} on {os.uname().nodename}\n"
        with pytest.raises(ConfigError, match=rf"OUTPUT_DIR '{out}' is being written by another "
                           rf"raypipe archive \(pid {os.getpid()} on "):  # fmt: skip
            raypipe.process_archive(str(src), str(out), quiet=True)
    assert list(out.iterdir()) == [] and not ray.is_initialized()
    with output_dir_lock(str(out)):  # free again
        pass
    with output_dir_lock("s3://bucket/out"):  # object stores hold no lock
        pass


def test_archive_paths_and_lists_as_users_give_them(tmp_path: Path, no_ray: None) -> None:
    """From a sweep: ``--report`` into a missing folder failed after the videos, as an
    "unexpected" FileNotFoundError; pathlib inputs raised TypeError; a CSV saved by Excel
    ("CSV UTF-8", with a byte order mark) had no 'uri' column; ``archive --overwrite`` was
    taken and did nothing."""
    import pathlib

    import raypipe
    from raypipe.cli import main
    from raypipe.distributed.archive import _items_of
    from raypipe.errors import ConfigError
    from raypipe.inputs import list_inputs

    missing = tmp_path / "nodir" / "sub" / "rep.parquet"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_bytes(b"x")
    with pytest.raises(ConfigError, match=rf"--report \(report_path\) '{missing}': directory"):
        raypipe.process_archive(str(tmp_path / "in"), str(tmp_path / "o"), report_path=missing)
    # Parquet under a .csv name, which `raypipe report` then refused (a sweep)
    with pytest.raises(ConfigError, match="the archive report is Parquet: name it REPORT"):
        raypipe.process_archive(
            str(tmp_path / "in"), str(tmp_path / "o"), report_path=tmp_path / "rep.csv"
        )
    manifest = tmp_path / "list.csv"
    manifest.write_bytes("\ufeffuri,output\n/in/a.mp4,x.mp4\n".encode())
    (item,) = list_inputs(str(manifest))
    assert (item.uri, item.relative_output) == ("/in/a.mp4", "x.mp4")
    assert [i.uri for i in _items_of([str(pathlib.Path("/in/a.mp4"))])] == ["/in/a.mp4"]
    with pytest.raises(SystemExit) as usage:
        main(["archive", str(tmp_path), str(tmp_path / "o"), "--overwrite"])
    assert usage.value.code == 2
