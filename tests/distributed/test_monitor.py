"""Progress lines for a terminal, a log and a notebook; quiet prints nothing."""

from __future__ import annotations

import io
import sys
import time
import types
from typing import Any

import pytest

from raypipe.distributed import monitor
from raypipe.distributed.monitor import ArchiveProgress, Progress, format_duration


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A controllable monotonic clock for the monitor module: set ``clock[0]``."""
    now = [1000.0]
    monkeypatch.setattr(monitor.time, "monotonic", lambda: now[0])
    return now


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.4, "59s"), (75, "1m15s"), (3725, "1h02m05s"), (float("inf"), "?")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_progress_line_has_frames_fps_and_eta(clock: list[float]) -> None:
    out = io.StringIO()
    progress = Progress(100, label="in.mp4", stream=out, interval_s=1.0)
    clock[0] += 2.0
    progress.update(20)
    clock[0] += 2.0
    progress.update(20)
    assert out.getvalue().splitlines() == [
        "in.mp4: 20/100 frames (20%), measuring the pace",
        "in.mp4: 40/100 frames (40%), 10.0 fps, ETA 6s",
    ]


def test_progress_for_logs_prints_at_most_every_interval(clock: list[float]) -> None:
    out = io.StringIO()
    progress = Progress(100, label="v", stream=out, interval_s=5.0)
    for _ in range(9):  # 9 updates within 4.5 s: one line (the first)
        clock[0] += 0.5
        progress.update(1)
    assert len(out.getvalue().splitlines()) == 1
    clock[0] += 5.0
    progress.update(1)
    progress.update(90)  # all done: always shown
    progress.close("v: done")
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and lines[2].startswith("v: 100/100 frames (100%)")
    assert lines[-1] == "v: done"
    progress.close("again")  # closing twice prints nothing more
    assert out.getvalue().splitlines()[-1] == "v: done"


def test_progress_on_a_terminal_rewrites_one_line(clock: list[float]) -> None:
    out = _Tty()
    progress = Progress(10, label="v", stream=out, interval_s=0.0)
    progress.update(5)
    progress.update(5)
    progress.close()
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 3 and text.endswith("\n") and text.count("\n") == 1


def test_quiet_prints_nothing(clock: list[float], capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    progress = Progress(10, stream=out, enabled=False)
    archive = ArchiveProgress(3, stream=out, enabled=False)
    progress.update(10)
    archive.video_done(True, 10)
    archive.video_done(False)
    progress.close("done")
    archive.close("done")
    assert out.getvalue() == ""
    assert capsys.readouterr() == ("", "")
    assert archive.ok == 1 and archive.failed == 1  # still counts


def test_a_failed_videos_frames_are_not_counted_finished(clock: list[float]) -> None:
    """A failed video's frames counted as finished: "1 done, 2 failed, 138 frames" for the
    90 the archive wrote (a sweep)."""
    archive = ArchiveProgress(3, stream=io.StringIO(), interval_s=100.0)
    clock[0] += 10.0
    archive.video_result("done", 90, planned=True)
    archive.video_result("failed", 48, planned=True)
    archive.video_result("skipped", 30, planned=False)
    assert archive.line() == (
        "archive: 3/3 videos (1 done, 1 skipped, 1 failed), 90 frames, 9.0 fps, ETA 0s"
    )


def test_archive_progress_counts_videos_frames_and_fps(clock: list[float]) -> None:
    out = io.StringIO()
    archive = ArchiveProgress(4, stream=out, interval_s=100.0)
    clock[0] += 10.0
    # before any frame, as `run`'s line, which the README says of both (it read "0 frames,
    # 0.0 fps, ETA ?": a sweep)
    assert archive.line() == "archive: 0/4 videos, starting: Ray, the actors, the first chunk (10s)"
    # a run that waits long for its first chunk says where to look (other jobs holding the
    # cluster's CPUs: it said "starting" for minutes; a sweep)
    assert archive.line(archive.start + 31).endswith("first chunk (31s)")  # its own Ray
    archive.shared = True  # a cluster raypipe did not start
    assert archive.line(archive.start + 31) == (
        "archive: 0/4 videos, starting: Ray, the actors, the first chunk (31s; `ray status` "
        "shows whether other jobs hold the cluster's CPUs or GPUs)"
    )
    archive.video_done(True, 120)
    archive.video_done(False)
    archive.video_done(True, 0, skipped=True)
    assert archive.line() == (
        "archive: 3/4 videos (1 done, 1 skipped, 1 failed), 120 frames, 12.0 fps, ETA 5s"
    ), "a skipped video is not counted done as well (a sweep read 5 ok, 5 skipped of 5)"

    archive.video_done(True, 80)  # the last one: shown even inside the interval
    assert out.getvalue().splitlines()[-1].startswith("archive: 4/4 videos (2 done, 1 skipped")


def test_archive_progress_never_counts_a_frame_twice(clock: list[float]) -> None:
    archive = ArchiveProgress(2, total_frames=200, stream=io.StringIO())
    clock[0] += 4.0
    for _ in range(5):
        archive.update(20)  # chunks of the first video
    assert archive.frames == 100
    archive.video_done(True, 100)  # the same frames, now as a finished video
    assert archive.frames == 100
    assert archive.eta_seconds() == pytest.approx(4.0)  # 100 frames left at 25 fps


def test_notebook_renders_one_display_updated_in_place(
    clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    ipython = pytest.importorskip("IPython")
    import IPython.display

    shell = types.SimpleNamespace(kernel=object())  # what a Jupyter kernel's shell has
    monkeypatch.setattr(ipython, "get_ipython", lambda: shell, raising=False)
    shown: list[tuple[str, Any]] = []

    class Handle:
        def update(self, obj: Any) -> None:
            shown.append(("update", obj))

    def display(obj: Any, display_id: bool = False) -> Handle:
        shown.append(("display", obj))
        return Handle()

    monkeypatch.setattr(IPython.display, "display", display)
    assert monitor.in_notebook()
    progress = Progress(10, label="clip <1>", interval_s=0.0)
    progress.update(4)
    progress.update(6)
    progress.close()
    assert [kind for kind, _ in shown] == ["display", "update", "update"]
    html = shown[-1][1].data
    assert '<progress max="1" value="1.0000"' in html
    assert "clip &lt;1&gt;: 10/10 frames (100%)" in html  # text is escaped


def test_not_a_notebook_without_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.SimpleNamespace(get_ipython=lambda: types.SimpleNamespace())  # terminal IPython
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert not monitor.in_notebook()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))
    assert not monitor.in_notebook()


def test_a_message_goes_above_the_progress_line(clock: list[float]) -> None:
    out = _Tty()
    archive = ArchiveProgress(2, stream=out, interval_s=100.0)
    archive.update(10)
    archive.message("failed: x.mp4: CorruptVideoError: bad")
    archive.update(10)  # shown again at once, though inside the interval
    lines = out.getvalue().split("\r\x1b[K")
    assert lines[-2] == "failed: x.mp4: CorruptVideoError: bad\n"
    assert lines[-1].startswith("archive: 0/2 videos (0 done, 0 failed), 20 frames")


def test_quiet_shows_no_message(capsys: pytest.CaptureFixture[str]) -> None:
    archive = ArchiveProgress(1, enabled=False)
    archive.message("failed: x.mp4")
    archive.video_done(False)
    archive.close()
    assert capsys.readouterr() == ("", "")


def test_a_begun_progress_shows_a_line_every_interval_before_any_frame() -> None:
    """`raypipe run` showed nothing until its first chunk was done: 41 s of a 50 s run on
    a busy machine. Begun before Ray starts, the line comes at once and every interval,
    saying what it starts (not "frames (": tests wait for that as the sign
    that frames are done); closing ends it."""
    out = io.StringIO()
    progress = Progress(250, label="long.mp4", stream=out, interval_s=0.01)
    progress.begin()
    time.sleep(0.5)
    progress.close("long.mp4: done")
    lines = out.getvalue().splitlines()
    # at once, then in a log every 10 intervals (0.1 s) while nothing is done
    assert 4 <= len(lines) <= 8, lines
    starting = "long.mp4: 0/250 frames, starting: Ray, the actors, the first chunk ("
    assert lines[0].startswith(starting)
    assert all("frames (" not in line for line in lines[:-1])
    assert lines[-1] == "long.mp4: done"
    time.sleep(0.2)
    assert out.getvalue().splitlines() == lines  # nothing after the close


def test_stopping_a_progress_on_a_terminal_ends_its_line_for_the_error() -> None:
    out = _Tty()
    progress = ArchiveProgress(3, stream=out, interval_s=10.0)
    progress.begin()
    progress.stop()
    progress.stop()
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1
    progress.close("not shown")  # stopped: the run's error is the last word
    assert "not shown" not in out.getvalue()


def test_the_pace_is_measured_from_the_first_chunk_done(clock: list[float]) -> None:
    """Begun before Ray starts, the progress counted the start in its fps: the demo said
    "24/120 frames (20%), 1.0 fps, ETA 1m37s" and ended 20 s later; a 20-minute video's
    first line said "ETA 44m39s" for 18 s of work (sweeps). Until the pace is measured,
    the line says so; once the last frame is done, the fps stays and the line says the
    output is being finished (its assembly took seconds, the fps falling, ETA 0s)."""
    out = io.StringIO()
    progress = Progress(100, label="v", stream=out, interval_s=0.0)
    clock[0] += 10.0  # Ray's start, the actors', the first chunk's
    progress.update(20)
    clock[0] += 2.0
    progress.update(20)
    clock[0] += 6.0
    progress.update(60)
    clock[0] += 5.0  # the segments assembled
    assert progress.line() == "v: 100/100 frames (100%), 10.0 fps, finishing the output"
    assert out.getvalue().splitlines() == [
        "v: 20/100 frames (20%), measuring the pace",
        "v: 40/100 frames (40%), 10.0 fps, ETA 6s",
        "v: 100/100 frames (100%), 10.0 fps, finishing the output",
    ]


def test_chunks_that_end_together_give_no_absurd_pace(clock: list[float]) -> None:
    """A short video's chunks end within milliseconds of each other: its last line said
    "36/36 frames (100%), 4707.1 fps" (a sweep). Until the first frames are some seconds
    old, the pace counts from the start."""
    out = io.StringIO()
    progress = Progress(36, label="b.mp4", stream=out, interval_s=0.0)
    clock[0] += 4.0
    progress.update(12)
    clock[0] += 0.005
    progress.update(24)
    assert out.getvalue().splitlines()[-1] == (
        "b.mp4: 36/36 frames (100%), 9.0 fps, finishing the output"
    )


def test_an_archives_eta_follows_the_frames_of_the_videos_planned(clock: list[float]) -> None:
    """By finished videos alone a one-video archive showed "ETA ?" to its end, and one of
    four "1/4 videos ... ETA 1m30s" with 3 s to go. Once plans come in, the ETA is by
    frames, the videos not in yet counted at the planned ones' mean."""
    out = io.StringIO()
    archive = ArchiveProgress(4, stream=out, interval_s=0.0)
    archive.video_done(True, skipped=True, planned=False)  # done by an earlier run
    clock[0] += 10.0  # Ray's start, the first chunk
    archive.video_planned(100)
    archive.update(50)
    clock[0] += 5.0
    archive.update(50)  # 10 fps since the first frames were done
    # 100 of 100 planned frames done, 2 videos not in yet at 100 frames each: 20 s
    assert archive.eta_seconds() == pytest.approx(20.0)
    one = ArchiveProgress(1, stream=io.StringIO(), interval_s=0.0)
    one.video_planned(300)
    one.update(100)
    clock[0] += 10.0
    one.update(100)
    assert one.line().endswith("ETA 10s")
