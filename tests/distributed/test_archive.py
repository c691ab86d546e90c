"""Bulk archives: good clips exact, every bad input a typed row, resume, exit codes."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_exact, closed_port, lossless_cli_args, lossless_options

import raypipe
from raypipe.archive_report import NOT_REACHED, UNFINISHED, read_report
from raypipe.cli import main
from raypipe.distributed.monitor import ArchiveProgress
from raypipe.testing import (
    write_audio_only,
    write_corrupt_packets,
    write_empty_file,
    write_text_as_video,
    write_truncated_header,
    write_zero_frames,
)


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_local: None) -> None:
    return None


def lossless_args() -> list[str]:
    return [*lossless_cli_args(), "--chunk-frames", "12"]


def test_archive_of_good_and_bad_inputs(
    clips: dict[str, Path],
    tmp_path: Path,
    http_dir: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, base_url = http_dir
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    good = {
        "a.mp4": shutil.copy(clips["bframes_aac"], src / "a.mp4"),
        "sub/b.mov": shutil.copy(clips["hevc_mov"], src / "sub" / "b.mov"),
        "vfr.mp4": shutil.copy(clips["vfr"], src / "vfr.mp4"),
    }
    shutil.copy(clips["ntsc"], root / "remote.mp4")
    bad = {
        str(write_empty_file(src / "empty.mp4")): "CorruptVideoError",
        str(write_text_as_video(src / "text.mp4")): "CorruptVideoError",
        str(write_truncated_header(src / "truncated.mp4")): "CorruptVideoError",
        str(write_corrupt_packets(src / "corrupt.mp4")): "CorruptVideoError",
        str(write_audio_only(src / "audio.m4a")): "NoVideoStreamError",
        str(write_zero_frames(src / "zero.mp4")): "EmptyVideoError",
        str(src / "folder.mp4"): "CorruptVideoError",  # a directory named like a video
        f"{base_url}/private.mp4": "InputPermissionError",  # HTTP 403
        str(src / "missing.mp4"): "InputNotFoundError",
        f"http://127.0.0.1:{closed_port()}/gone.mp4": "InputError",  # connection refused
    }
    (src / "folder.mp4").mkdir()
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uri", "output"])
        for rel, path in good.items():
            writer.writerow([str(path), rel])
        writer.writerow([f"{base_url}/remote.mp4", "remote/ntsc.mp4"])
        for uri in bad:
            writer.writerow([uri, f"bad/{os.path.basename(uri)}"])
        writer.writerow([str(good["a.mp4"]) + "?", "../escape.mp4"])
    out = tmp_path / "out"
    code = main(["archive", str(manifest), str(out), "--model", "builtin:invert", *lossless_args()])
    captured = capsys.readouterr()
    printed = captured.out
    assert code == 3
    rows = {r["uri"]: r for r in read_report(str(out / "_raypipe-report.parquet"))}
    assert len(rows) == len(good) + 1 + len(bad) + 1
    for rel, path in good.items():
        row = rows[str(path)]
        assert row["status"] == "done" and row["frames_out"] == 48 and row["attempts"] == 1
        assert_exact(Path(path), out / rel, "builtin:invert")
    assert rows[f"{base_url}/remote.mp4"]["status"] == "done"
    assert_exact(clips["ntsc"], out / "remote" / "ntsc.mp4", "builtin:invert")
    for uri, error_type in bad.items():
        row = rows[uri]
        assert (row["status"], row["error_type"]) == ("failed", error_type), row
        assert row["error_message"] and row["output"] == ""
        assert not (out / "bad" / os.path.basename(uri)).exists()
    escape = rows[str(good["a.mp4"]) + "?"]
    assert escape["error_type"] == "ConfigError" and "escape OUTPUT_DIR" in escape["error_message"]
    assert not (tmp_path / "escape.mp4").exists()
    assert not list(out.rglob(".*")), "a work directory or temporary file was left behind"
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == sorted(
        ["a.mp4", "b.mov", "vfr.mp4", "ntsc.mp4", "_raypipe-report.parquet", "_raypipe-report.png"]
    )
    assert "4 done, 0 skipped, 11 failed" in printed
    # progress on stderr: videos done/failed of the total, and each failure as it happens
    assert "archive: 15/15 videos (4 done, 11 failed)" in captured.err
    assert "failed: http://127.0.0.1:" in captured.err
    assert (out / "_raypipe-report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_finished_and_no_resume_starts_over(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for kind in ("bframes_aac", "odd_size"):
        shutil.copy(clips[kind], src / f"{kind}.mp4")
    out = tmp_path / "out"
    args = {"model": "builtin:blur", "chunk_frames": 12, "quiet": True}
    first = raypipe.process_archive(str(src), str(out), **args)
    assert first.exit_code == 0 and first.count("done") == 2
    assert (out / "_raypipe-report.png").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    second = raypipe.process_archive(str(src), str(out), **args)
    assert [r["status"] for r in second.rows] == ["skipped", "skipped"]
    # no chunk ran: the first run's picture, beside a report of skipped rows, is gone
    assert not (out / "_raypipe-report.png").exists()
    assert [r["attempts"] for r in second.rows] == [1, 1]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.mp4")} == mtimes, "outputs rewritten"
    # outputs are trusted only when they record this run's key and source: another video
    # with the same frame count at an output path is redone (it was once skipped), and so
    # is a half-written file
    shutil.copy(clips["single_keyframe"], out / "odd_size.mp4")  # 48 frames, not made here
    (out / "bframes_aac.mp4").write_bytes(b"half a file")
    third = raypipe.process_archive(str(src), str(out), **args)
    statuses = {Path(r["uri"]).name: (r["status"], r["attempts"], r["note"]) for r in third.rows}
    assert statuses == {
        "bframes_aac.mp4": ("done", 2, "redone: the output does not read (CorruptVideoError)"),
        "odd_size.mp4": ("done", 2, "redone: the output does not record what made it"),
    }
    fourth = raypipe.process_archive(str(src), str(out), resume=False, **args)
    assert [r["status"] for r in fourth.rows] == ["done", "done"]
    from raypipe.testing import decode_all

    for kind in ("bframes_aac", "odd_size"):  # blur output from lossy x264: shapes and counts
        frames, pts, _ = decode_all(out / f"{kind}.mp4")
        assert frames.shape == decode_all(clips[kind])[0].shape


def test_a_rerun_stopped_by_ctrl_c_keeps_the_whole_report(
    clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in a rerun that redoes an archive (another model) once its second video is
    done: the report keeps a row for every input, this run's for the videos it finished
    and the earlier run's, noted so, for the one it did not reach, with its attempts.
    Before, the interrupted run left the report it wrote when its first video ended (it
    writes at most every 10 s): that one video's row alone, and the next run counted the
    others' attempts from 0."""
    src = tmp_path / "src"
    src.mkdir()
    names = ["a.mp4", "b.mp4", "c.mp4"]
    for name in names:
        shutil.copy(clips["bframes_aac"], src / name)
    out = tmp_path / "out"
    first = raypipe.process_archive(str(src), str(out), model="builtin:invert", quiet=True)
    assert first.count("done") == 3
    done = []

    def video_done(self: ArchiveProgress, ok: bool, frames: int, **_: bool) -> None:
        done.append(ok)
        if len(done) == 2:
            signal.raise_signal(signal.SIGINT)  # the user's Ctrl-C, as the second video ends

    monkeypatch.setattr(ArchiveProgress, "video_done", video_done)
    with pytest.raises(KeyboardInterrupt):
        raypipe.process_archive(str(src), str(out), model="builtin:identity", quiet=True)
    assert done == [True, True]
    rows = read_report(str(out / "_raypipe-report.parquet"))
    assert [Path(r["uri"]).name for r in rows] == names
    # the third video's row: this run's where its assembly had ended by the stop (its
    # output made, its result not yet taken: the report left it out, a sweep), else the
    # earlier run's, noted as not reached, or as in progress when its plan had come in
    # (its output may be finished after the stop)
    from raypipe.testing import decode_all

    source = decode_all(clips["bframes_aac"])[0][0].astype(int)
    for row in rows:
        this_run = row["note"] not in (NOT_REACHED, UNFINISHED)
        assert (row["status"], row["attempts"]) == ("done", 2 if this_run else 1), row
        first = decode_all(row["output"])[0][0].astype(int)
        if this_run:  # identity's frames
            assert np.abs(first - source).mean() < 10, row
        elif row["note"] == NOT_REACHED:  # invert's: this run never began it
            assert np.abs(first - source).mean() > 40, row
    assert sum(r["note"] not in (NOT_REACHED, UNFINISHED) for r in rows) >= 2
    assert all(Path(r["output"]).exists() for r in rows)


def test_a_video_that_fails_where_an_earlier_output_is_says_it_is_still_there(
    clips: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An input replaced by a damaged file after its output was made: the rerun fails it,
    and its earlier output stays (raypipe does not delete what it cannot remake). The
    row said failed with no output while the folder held a video of the old input; it
    says where that output is now. A new bad input with nothing at its output says not.
    The work folder of a video no longer listed (its run stopped inside it, then the
    input went) is named at the end, not left unmentioned (a sweep), and not deleted."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(clips["bframes_aac"], src / "a.mp4")
    out = tmp_path / "out"
    first = raypipe.process_archive(str(src), str(out), model="builtin:invert", quiet=True)
    assert first.count("done") == 1
    made = (out / "a.mp4").read_bytes()
    write_truncated_header(src / "a.mp4")
    write_empty_file(src / "new.mp4")
    stale = out / "sub" / ".gone.mp4.raypipe-work"
    stale.mkdir(parents=True)
    (stale / "c000000.seg").write_bytes(b"segment")
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        second = raypipe.process_archive(str(src), str(out), model="builtin:invert", quiet=True)
    (said,) = [r.getMessage() for r in caplog.records if "work folder" in r.getMessage()]
    assert said.startswith(
        f"1 work folder(s) in OUTPUT_DIR belong to no input of this run ({stale})"
    )
    assert (stale / "c000000.seg").exists()
    rows = {Path(r["uri"]).name: r for r in second.rows}
    assert [rows[n]["status"] for n in ("a.mp4", "new.mp4")] == ["failed", "failed"]
    assert rows["a.mp4"]["note"] == (
        f"an earlier run's output is still at {out / 'a.mp4'}, left as it is"
    )
    assert rows["new.mp4"]["note"] == ""
    assert (out / "a.mp4").read_bytes() == made and not (out / "new.mp4").exists()


def test_a_second_input_for_one_output_never_takes_it_from_its_own_input(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    """``clip.flv`` beside ``clip.mp4``: both outputs are ``clip.mp4`` (raypipe writes no
    .flv). The first in sorted order won it, so a rerun after ``clip.flv`` came replaced
    ``clip.mp4``'s finished output with the other video's, and ``clip.mp4``'s failed row
    said its earlier output was "still there, left as it is" (a sweep). The output is
    ``clip.mp4``'s own name: it keeps it, and the other input fails, naming it."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(clips["bframes_aac"], src / "clip.mp4")
    out = tmp_path / "out"
    first = raypipe.process_archive(str(src), str(out), model="builtin:invert", quiet=True)
    assert first.count("done") == 1
    made = (out / "clip.mp4").read_bytes()
    shutil.copy(clips["ntsc"], src / "clip.mkv")  # as a camera's .flv would: sorts first
    (src / "clip.mkv").rename(src / "clip.flv")
    second = raypipe.process_archive(str(src), str(out), model="builtin:invert", quiet=True)
    rows = {Path(r["uri"]).name: r for r in second.rows}
    assert rows["clip.mp4"]["status"] == "skipped", rows["clip.mp4"]
    assert (rows["clip.flv"]["status"], rows["clip.flv"]["note"]) == ("failed", "")
    assert rows["clip.flv"]["error_message"].startswith(
        f"output 'clip.mp4' is claimed by 2 inputs: it is written for '{src / 'clip.mp4'}' "
        "(its own name); give this one another output"
    )
    assert (out / "clip.mp4").read_bytes() == made


def test_fewer_chunks_than_workers_is_no_warning(clips: dict[str, Path], tmp_path: Path) -> None:
    """An archive cannot know its chunk count before its plan tasks run, so its actor pool
    may be larger than the chunks it gets: Ray Data's hint about that (a UserWarning
    suggesting ``override_num_blocks``) is not for raypipe's users and is not shown."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(clips["bframes_aac"], src / "a.mp4")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        report = raypipe.process_archive(
            str(src), str(tmp_path / "out"), model="builtin:invert", workers=2,
            chunk_frames=1000, quiet=True,
        )  # fmt: skip
    assert report.count("done") == 1
    shown = [str(w.message) for w in seen if "concurrent actors" in str(w.message)]
    assert not shown, shown


def test_glob_inputs_mirror_paths(clips: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "x" / "y").mkdir(parents=True)
    shutil.copy(clips["ntsc"], src / "x" / "y" / "n.mp4")
    shutil.copy(clips["hevc_mov"], src / "x" / "h.mov")
    out = tmp_path / "out"
    report = raypipe.process_archive(
        str(src / "**" / "*.mp4"),
        str(out),
        model="builtin:identity",
        quiet=True,
        **lossless_options(),
    )
    assert report.exit_code == 0 and len(report.rows) == 1
    assert_exact(clips["ntsc"], out / "x" / "y" / "n.mp4", "builtin:identity")


def test_a_video_in_progress_at_the_stop_is_noted_so_in_the_partial_report() -> None:
    """After Ctrl-C an assembly task in flight may still finish a video's output; its row
    (the earlier run's) said "the last run stopped before this video" (a sweep). A video
    begun when the run stopped (``Runner.unfinished``) now says it was in progress."""
    from raypipe.archive_report import ReportJournal

    previous = {
        uri: {"uri": uri, "status": "done", "note": "", "attempts": 1} for uri in ("a", "b")
    }
    journal = ReportJournal("unused.parquet", previous, {"a": 0, "b": 1})
    rows = journal.rows({"b"})
    assert [(r["uri"], r["note"]) for r in rows] == [("a", NOT_REACHED), ("b", UNFINISHED)]
    assert [r["note"] for r in journal.rows()] == [NOT_REACHED, NOT_REACHED]


def test_an_output_name_too_long_for_the_work_folder_fails_its_video_alone(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    """A 244-character input name is a legal output name, but the work folder beside it
    (``.NAME.raypipe-work``) is not: the OSError ended the whole archive, with a Ray
    traceback and no report (a sweep). That video fails alone, saying how long a name
    may be; the others are done."""
    src = tmp_path / "src"
    src.mkdir()
    long_name = "L" * 240 + ".mp4"
    for name in ("a.mp4", long_name):
        shutil.copy(clips["bframes_aac"], src / name)
    report = raypipe.process_archive(str(src), str(tmp_path / "out"), quiet=True)
    rows = {Path(r["uri"]).name: r for r in report.rows}
    assert rows["a.mp4"]["status"] == "done"
    failed = rows[long_name]
    assert (failed["status"], failed["error_type"]) == ("failed", "StorageError")
    assert failed["error_message"].endswith(
        "File name too long; raypipe's work folder and staging files beside an output add up "
        "to 24 characters to its name: name the output at most 231 characters long"
    )


def test_every_video_whose_audio_is_reencoded_says_so_in_its_row(tmp_path: Path) -> None:
    """The terminal says a kind of change once per run, naming the first video; the second
    video whose Opus went into MOV as AAC had it in no line and an empty note (a sweep)."""
    from raypipe.testing import ClipSpec, make_clip

    spec = ClipSpec(width=64, height=48, n_frames=6, gop=6, audio="libopus")
    src = tmp_path / "src"
    src.mkdir()
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uri", "output"])
        for name in ("a", "b"):
            writer.writerow([str(make_clip(src / f"{name}.mkv", spec)), f"{name}.mov"])
    out = tmp_path / "out"
    report = raypipe.process_archive(str(manifest), str(out), model="builtin:invert", quiet=True)
    notes = {os.path.basename(r["uri"]): r["note"] for r in report.rows}
    assert set(notes) == {"a.mkv", "b.mkv"}
    for name, note in notes.items():
        assert "audio stream 1 (opus) cannot go into a mov file" in note, (name, note)
        assert "re-encoded as aac" in note, (name, note)


def test_the_report_is_written_at_least_every_minute_while_rows_come(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A quarter more rows, at most every 10 s, kept a long archive's rewrites few; alone, a
    driver killed at 8000 rows would have waited for 10000 (hours of rows; a sweep)."""
    from raypipe import archive_report
    from raypipe.archive_report import ReportJournal
    from raypipe.distributed.planning import VideoResult

    now = [1000.0]
    monkeypatch.setattr(archive_report.time, "monotonic", lambda: now[0])
    journal = ReportJournal("unused.parquet", {}, {})
    written: list[tuple[float, int]] = []
    monkeypatch.setattr(journal, "write", lambda: written.append((now[0], journal.reached)))
    for i in range(200):  # a video every 5 s for 1000 s
        journal.add(VideoResult(uri=f"v{i}", output=f"o{i}", status="done"))
        now[0] += 5.0
    gaps = [b[0] - a[0] for a, b in zip(written, written[1:])]
    assert written[0] == (1000.0, 1) and max(gaps) <= 60.0 and min(gaps) >= 10.0, written
    assert len(written) < 40  # not every 10 s: 100 writes


def test_a_finished_videos_leftover_work_folder_goes_when_it_is_skipped(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    """A run killed while it made finished videos anew (``--no-resume``) left their work
    folders; the next runs skipped the videos and kept the folders for good, unnamed (a
    sweep). Not while a ``raypipe run`` writes that output."""
    from raypipe.distributed.chunk_task import output_held

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(clips["ntsc"], src / "a.mp4")
    out = tmp_path / "out"
    args = ["archive", str(src), str(out), "--model", "builtin:invert", "--quiet"]
    assert main(args) == 0
    left = out / ".a.mp4.raypipe-work" / "run-deadbeef0000"
    left.mkdir(parents=True)
    (left / "run.json").write_text("{}")
    with output_held(str(out / "a.mp4"), tensor=False):  # a `raypipe run` on it: kept
        assert main(args) == 0
    assert left.exists()
    assert main(args) == 0
    rows = read_report(str(out / "_raypipe-report.parquet"))
    assert [r["status"] for r in rows] == ["skipped"]
    assert not list(out.rglob(".*")), list(out.rglob(".*"))
