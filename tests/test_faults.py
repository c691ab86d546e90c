"""The fault hooks' attempt records read back as they were written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raypipe import faults


def test_recorded_attempts_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.RECORD_ENV, str(tmp_path))
    faults.checkpoint("infer", "video.mp4:3", node="n1")  # a key with a dot
    faults.checkpoint("infer", "video.mp4:3", node="n1")
    faults.checkpoint("segment", "video.mp4:3")
    got = sorted(faults.attempt_of(name) for name in os.listdir(tmp_path))
    pid = os.getpid()
    assert got == [
        faults.Attempt("video.mp4:3", "infer", "n1", pid, 0),
        faults.Attempt("video.mp4:3", "infer", "n1", pid, 1),
        faults.Attempt("video.mp4:3", "segment", "local", pid, 0),
    ]
