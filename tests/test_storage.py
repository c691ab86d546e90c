"""raypipe.storage's local writes: what a full disk says."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from raypipe import storage
from raypipe.errors import StorageError


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (errno.ENOSPC, "its disk is full; free space there, or write to another folder"),
        (errno.EDQUOT, "the disk quota there is used up; free space, or write to another folder"),
        (errno.EROFS, "its file system is read-only; write to another folder"),
    ],
)
def test_a_full_disk_names_the_path_and_what_to_do(code: int, says: str) -> None:
    """A full disk came out as "RaypipeError: OSError: [Errno 28] No space left on device",
    naming nothing (a sweep; seen through `raypipe run` on a full tmpfs, both for a segment
    and for the output)."""
    with pytest.raises(StorageError) as raised, storage.writing("/out/clip.mp4"):
        raise OSError(code, "the OS's words")
    assert str(raised.value) == f"cannot write /out/clip.mp4: {says}"
    assert raised.value.__cause__ is not None and raised.value.__cause__.errno == code


def test_other_errors_pass_as_they_are(tmp_path: Path) -> None:
    with pytest.raises(PermissionError), storage.writing("/out/clip.mp4"):
        raise PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(StorageError, match="^a store's own$"), storage.writing("/out/x"):
        raise StorageError("a store's own")
    target = tmp_path / "a" / "b.bin"
    with pytest.raises(FileNotFoundError):  # a missing folder is not a full disk
        storage.write_bytes(str(target), b"x")
    storage.write_bytes(str(tmp_path / "b.bin"), b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["b.bin"]


def test_held_lock_files_go_before_a_process_ends_without_unwinding(tmp_path: Path) -> None:
    """A command whose cluster's head went away ends from a thread (``os._exit``): the
    output's lock file stayed beside it (a test of that end: tests/deploy/test_head_lost.py)."""
    lock = tmp_path / ".out.mp4.raypipe-lock"
    with storage.held(str(lock), "busy {who}"):
        assert lock.exists()
        storage.remove_held_locks()
        assert not lock.exists()
    storage.remove_held_locks()  # none held: nothing to do
    assert list(tmp_path.iterdir()) == []
