"""The driver killed with SIGKILL mid-archive, then the same command again: every output
complete and exact, none duplicated, finished videos not redone, the cut-off video resumed
from its encoded chunks; the report left by the kill (rewritten as videos finish) names
only finished videos."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_exact, lossless_cli_args

from raypipe.archive_report import read_report
from raypipe.distributed.planning import work_dir_for
from raypipe.testing import ClipSpec, make_clip


def _archive_cmd(src: Path, out: Path) -> list[str]:
    exe = shutil.which("raypipe", path=os.path.dirname(sys.executable)) or "raypipe"
    return [
        exe,
        "archive",
        str(src),
        str(out),
        "--model",
        "builtin:invert",
        "--quiet",
        "--chunk-frames",
        "4",
        *lossless_cli_args(),
    ]


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _kill_session(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL every process of the driver's session and wait until none runs. Ray's
    workers lead process groups of their own, so killing the driver's group leaves them
    alive for a moment, long enough for an encode task to write one more segment."""
    deadline = time.monotonic() + 60
    while True:
        pids = _session_pids(proc.pid)
        if proc.poll() is None:
            pids.append(proc.pid)
        if not pids:
            return
        assert time.monotonic() < deadline, f"processes outlived SIGKILL: {pids}"
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.poll()
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_then_resume(clips: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for kind in ("bframes_aac", "ntsc"):
        shutil.copy(clips[kind], src / f"a_{kind}.mp4")
    long = make_clip(src / "z_long.mp4", ClipSpec(n_frames=400, gop=8, audio="aac"))
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # a fresh process session: the driver and the local Ray it starts die together
    proc = subprocess.Popen(
        _archive_cmd(src, out),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    work = Path(work_dir_for(str(out / "z_long.mp4")))
    try:
        deadline = time.monotonic() + 240
        report = out / "_raypipe-report.parquet"  # written when the first video ends
        while not (report.exists() and len(list(work.glob("run-*/*.rpseg"))) >= 5):
            assert proc.poll() is None, "the archive ended before it could be killed"
            assert time.monotonic() < deadline, "no progress to kill in the middle of"
            time.sleep(0.05)
    finally:
        _kill_session(proc)
    segments_left = len(list(work.glob("run-*/*.rpseg")))
    assert not (out / "z_long.mp4").exists() and 5 <= segments_left < 100
    # outputs only: a kill during a video's assembly leaves its hidden staging file
    # (.NAME.*.part.mp4), which the resumed run removes when it assembles that video
    finished_before = {p.name for p in out.glob("*.mp4") if not p.name.startswith(".")}
    # the report the kill left holds finished videos only, each with its output
    kept = {Path(r["uri"]).name: r["status"] for r in read_report(str(report))}
    assert kept and set(kept) <= finished_before and set(kept.values()) == {"done"}, kept
    assert finished_before, "no video had finished before the kill"
    mtimes = {name: (out / name).stat().st_mtime_ns for name in finished_before}

    result = subprocess.run(
        _archive_cmd(src, out),
        env=env,
        capture_output=True,
        timeout=600,
        start_new_session=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    # --quiet, as a user runs it: nothing on stderr (no notice from Ray or Ray Data)
    assert result.stderr.decode() == ""
    rows = {Path(r["uri"]).name: r for r in read_report(str(out / "_raypipe-report.parquet"))}
    for name in finished_before:
        assert rows[name]["status"] == "skipped", rows[name]
        assert (out / name).stat().st_mtime_ns == mtimes[name], "a finished video was redone"
    assert rows["z_long.mp4"]["status"] == "done"
    assert rows["z_long.mp4"]["reused_chunks"] == segments_left  # segments are written atomically
    assert rows["z_long.mp4"]["reused_chunks"] < 100
    for kind in ("bframes_aac", "ntsc"):
        assert_exact(clips[kind], out / f"a_{kind}.mp4", "builtin:invert")
    assert_exact(long, out / "z_long.mp4", "builtin:invert")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert files == [
        "_raypipe-report.parquet",
        "_raypipe-report.png",
        "a_bframes_aac.mp4",
        "a_ntsc.mp4",
        "z_long.mp4",
    ]
