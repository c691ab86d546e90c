"""Permission denied on a local input is a typed InputPermissionError (also for root runs:
the check then happens in a forked child that drops to an unprivileged user)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

from raypipe.errors import InputPermissionError
from raypipe.media import probe


def _probe_error(path: str) -> str:
    try:
        probe(path)
    except InputPermissionError as e:
        return f"InputPermissionError: {e}"
    except Exception as e:  # noqa: BLE001 - reported to the test
        return f"{type(e).__name__}: {e}"
    return "no error"


def _as_nobody(path: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    os.setgid(65534)
    os.setgroups([])
    os.setuid(65534)
    queue.put(_probe_error(path))


def test_unreadable_file_is_a_permission_error(clips: dict[str, Path]) -> None:
    directory = tempfile.mkdtemp(prefix="raypipe-perm-")
    try:
        os.chmod(directory, 0o755)
        path = os.path.join(directory, "locked.mp4")
        shutil.copy(clips["ntsc"], path)
        os.chmod(path, 0o000)
        if os.geteuid() == 0:
            ctx = multiprocessing.get_context("fork")
            queue = ctx.Queue()
            child = ctx.Process(target=_as_nobody, args=(path, queue))
            child.start()
            result = queue.get(timeout=60)
            child.join(timeout=60)
        else:
            result = _probe_error(path)
        assert result.startswith("InputPermissionError: input"), result
        assert "is not readable by this user; check its permissions" in result
    finally:
        shutil.rmtree(directory, ignore_errors=True)
