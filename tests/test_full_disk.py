"""A full disk, for real (a 1 MiB tmpfs): a typed one-line error that names it, before any
work where it can be seen then, and nothing left behind (a sweep: locks, folders and an
"unexpected" OSError)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SmallDisk

from raypipe import storage
from raypipe.cli import main
from raypipe.errors import StorageError

FULL = "its disk is full; free space there, or write to another folder"


def test_a_lock_on_a_full_disk_is_a_storage_error_and_leaves_no_file(
    small_disk: SmallDisk,
) -> None:
    """The lock's pid line did not fit: an OSError, and the lock file stayed beside the
    output (its unlink was only where the block ends)."""
    small_disk.fill()
    lock = small_disk.path / ".out.mp4.raypipe-lock"
    with pytest.raises(StorageError, match=f"cannot write {lock}: {FULL}"):
        with storage.held(str(lock), "busy {who}"):
            raise AssertionError("held on a full disk")
    assert small_disk.names() == []


def test_a_folder_is_not_writable_on_a_full_disk_and_is_not_left_made(
    small_disk: SmallDisk,
) -> None:
    """An empty probe file fits on a full disk, so the check passed and the run failed at
    its first write; the probe's own file stayed (Python's temporary file flushed again as
    it closed, and raised before its removal)."""
    small_disk.fill()
    new = small_disk.path / "made" / "here"
    assert storage.writable_dir_problem(str(new), make=True) == (f"cannot write in '{new}': {FULL}")
    assert storage.writable_dir_problem(str(small_disk.path)) == (
        f"cannot write in '{small_disk.path}': {FULL}"
    )
    assert small_disk.names() == ["made"]  # the made folder itself is gone, its parent not


@pytest.mark.parametrize("command", ["run", "run tables", "archive"])
def test_a_command_into_a_full_disk_fails_before_any_work_and_leaves_nothing(
    command: str,
    small_disk: SmallDisk,
    clips: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = str(clips["bframes_aac"])
    small_disk.fill()
    if command == "run":
        argv, shown = ["run", source, str(small_disk.path / "o.mp4")], small_disk.path
        said = f"output '{small_disk.path / 'o.mp4'}'"
    elif command == "run tables":
        argv = ["run", source, str(small_disk.path / "h"), "--model", "builtin:phash"]
        shown, said = small_disk.path / "h", f"output '{small_disk.path / 'h'}'"
    else:
        folder = tmp_path / "in"
        folder.mkdir()
        os.symlink(source, folder / "a.mp4")
        argv = ["archive", str(folder), str(small_disk.path / "arch")]
        shown, said = small_disk.path / "arch", f"OUTPUT_DIR '{small_disk.path / 'arch'}'"
    assert main([*argv, "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"raypipe: error: ConfigError: {said}: cannot write in '{shown}': {FULL}"
    assert small_disk.names() == []


def test_an_analysis_output_that_cannot_be_a_folder_is_a_config_error(
    clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file where OUTPUT's folder goes: "NotADirectoryError ... (unexpected)"."""
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "h"
    argv = ["run", str(clips["bframes_aac"]), str(target), "--model", "builtin:phash"]
    assert main([*argv, "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"raypipe: error: ConfigError: output '{target}': cannot make directory "
        f"'{target}': Not a directory"
    )


def test_a_local_ray_on_a_full_disk_is_refused_at_once_and_doctor_says_so(
    small_disk: SmallDisk, clips: dict[str, Path], tmp_path: Path
) -> None:
    """Ray's start timed out after 30 s, said as a busy machine; doctor said a run works."""
    small_disk.fill()
    env = {**os.environ, "TMPDIR": str(small_disk.path)}
    env.pop("RAY_TMPDIR", None)
    env.pop("RAY_ADDRESS", None)
    cli = [sys.executable, "-m", "raypipe.cli"]
    done = subprocess.run(
        [*cli, "run", str(clips["bframes_aac"]), str(tmp_path / "o.mp4"), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    said = (
        f"cannot start a local Ray: the disk of its session folder {small_disk.path}/ray is "
        "full (0 KiB free); free space there, or set RAY_TMPDIR (or TMPDIR) to a folder on "
        "another disk"
    )
    assert (done.returncode, done.stderr.strip()) == (1, f"raypipe: error: ClusterError: {said}")
    assert not (tmp_path / "o.mp4").exists()
    doctor = subprocess.run(
        [*cli, "doctor", "--device", "cpu"], capture_output=True, text=True, env=env, timeout=120
    )
    assert doctor.returncode == 1, doctor.stderr
    assert f"  local Ray  NO: {said.removeprefix('cannot start a local Ray: ')}" in doctor.stdout
    assert doctor.stdout.rstrip().endswith("=> --device cpu would fail here")
    assert doctor.stderr.strip().startswith("raypipe: error: ClusterError: a local Ray would not")


def test_a_run_record_that_does_not_fit_leaves_no_work_folder(small_disk: SmallDisk) -> None:
    """The work folder was made, its run.json did not fit, and the empty folder stayed."""
    from raypipe.distributed.planning import PlannedVideo, VideoJob, write_run_record
    from raypipe.reuse import Provenance

    output = small_disk.path / "o.mp4"
    planned = PlannedVideo(job=VideoJob(uri="in.mp4", output=str(output)), video_id="v")
    planned.provenance = Provenance(key="k", source="s")
    from raypipe.distributed.chunk_task import run_dir_for

    planned.work_dir = run_dir_for(str(output), planned.provenance)
    small_disk.fill()
    with pytest.raises(StorageError, match=f"^cannot write {planned.work_dir}/run.json: {FULL}$"):
        write_run_record(planned)
    assert small_disk.names() == []
