"""The fault hooks' attempt records read back as they were written; a hold file holds the
node's stages it names, and only those."""

from __future__ import annotations

import os
import threading
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


def test_a_hold_file_holds_its_node_and_stage_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(faults.HOLD_ENV, str(tmp_path))
    (tmp_path / "n1.infer").touch()
    faults.checkpoint("decode", "c0", node="n1")  # another stage on the node: not held
    faults.checkpoint("infer", "c0", node="n2")  # the stage on another node: not held
    faults.checkpoint("infer", "c0")  # a hook given no node: never held
    for hold in ("n1.infer", "n1"):  # the node's one stage, then every stage of the node
        (tmp_path / hold).touch()
        passed = threading.Event()
        waiter = threading.Thread(target=_infer_on_n1, args=(passed,))
        waiter.start()
        assert not passed.wait(0.3), f"{hold} did not hold n1's inference"
        (tmp_path / hold).unlink()
        assert passed.wait(5), f"n1's inference still held after {hold} went"
        waiter.join()


def _infer_on_n1(passed: threading.Event) -> None:
    faults.checkpoint("infer", "c0", node="n1")
    passed.set()
