"""The service's pieces that need no cluster: the mailbox's queue, event order and
cancellation, the command's path rewriting, and errors rebuilt on the command's side.
(A real service on a real `ray start --head`: tests/deploy/test_serve.py.)"""

from __future__ import annotations

import os
import threading

import pytest

from raypipe.distributed import service
from raypipe.distributed.service import Mailbox
from raypipe.errors import CorruptVideoError, RaypipeError


def _mailbox() -> Mailbox:
    return Mailbox({"host": "h", "pid": 1, "install": "/x", "version": "0"})


def test_runs_are_taken_in_arrival_order_and_each_says_what_is_ahead() -> None:
    box = _mailbox()
    assert box.submit({"input": "a"}) == ("run-1", 0)
    assert box.submit({"input": "b"}) == ("run-2", 1)
    assert box.take(0.0) == ("run-1", {"input": "a"})
    assert box.info()["running"] == "run-1"
    assert box.submit({"input": "c"}) == ("run-3", 2), "the running one and run-2 are ahead"
    assert box.take(0.0) == ("run-2", {"input": "b"})
    assert box.take(0.0) == ("run-3", {"input": "c"})
    assert box.take(0.01) is None


def test_events_come_in_number_order_even_when_posted_out_of_order() -> None:
    box = _mailbox()
    run_id, _ = box.submit({})
    box.take(0.0)
    box.post(run_id, 1, "text", "second\n")
    assert box.events(run_id, 0, 0.01) == [], "event 0 is missing: nothing is given yet"
    box.post(run_id, 0, "text", "first\n")
    assert box.events(run_id, 0, 0.01) == [("text", "first\n"), ("text", "second\n")]
    box.post(run_id, 2, "done", {"frames": 3})
    assert box.events(run_id, 2, 0.01) == [("done", {"frames": 3})]
    assert box.info()["running"] is None, "the run ended"
    assert box.events(run_id, 0, 0.01) == [], "a finished run's events are dropped once read"


def test_a_waiting_reader_wakes_when_an_event_comes() -> None:
    box = _mailbox()
    run_id, _ = box.submit({})
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(box.events(run_id, 0, 30.0)))
    reader.start()
    box.post(run_id, 0, "text", "x")
    reader.join(timeout=10)
    assert got == [[("text", "x")]]


def test_cancel_drops_a_queued_run_and_flags_a_running_one() -> None:
    box = _mailbox()
    running, _ = box.submit({"input": "a"})
    queued, _ = box.submit({"input": "b"})
    assert box.take(0.0) is not None
    box.cancel(queued)
    assert box.events(queued, 0, 0.01) == [
        ("error", {"type": "KeyboardInterrupt", "message": "cancelled while queued"})
    ]
    assert box.take(0.01) is None, "the cancelled run never reaches the service"
    assert not box.wait_cancel(running, 0.01)
    box.cancel(running)
    assert box.wait_cancel(running, 0.01), "the service sees the flag and interrupts the run"


def test_local_paths_are_made_absolute_urls_and_builtins_are_not(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    here = os.fspath(tmp_path)
    assert service._absolute("in.mp4") == os.path.join(here, "in.mp4")
    assert service._absolute("s3://b/in.mp4") == "s3://b/in.mp4"
    assert service._absolute("builtin:invert") == "builtin:invert"
    assert service._absolute("sim:hold_ms=5") == "sim:hold_ms=5", "was made a missing file"
    assert service._processor_absolute("p/mine.py:Blur") == os.path.join(here, "p/mine.py:Blur")
    assert service._processor_absolute("pkg.mod:Blur") == "pkg.mod:Blur"
    assert service._processor_absolute(None) is None


def test_the_run_error_is_rebuilt_with_its_type() -> None:
    error = service._rebuild_error({"type": "CorruptVideoError", "message": "bad", "detail": "tb"})
    assert isinstance(error, CorruptVideoError) and str(error) == "bad"
    assert error.detail == "tb"  # type: ignore[attr-defined]
    other = service._rebuild_error({"type": "ZeroDivisionError", "message": "division by zero"})
    assert type(other).__name__ == "ZeroDivisionError" and not isinstance(other, RaypipeError)
    assert isinstance(service._rebuild_error({"type": "KeyboardInterrupt"}), KeyboardInterrupt)


def test_a_service_elsewhere_or_from_another_install_is_not_used() -> None:
    here = service._identity()
    assert service.usable(here) is None
    assert "not this machine" in str(service.usable({**here, "host": "elsewhere"}))
    assert "/other/raypipe" in str(service.usable({**here, "install": "/other/raypipe"}))


def test_a_processor_module_found_only_from_here_is_not_handed_over(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    here = service._identity()
    (tmp_path / "mychain").mkdir()  # type: ignore[operator]
    (tmp_path / "mychain" / "__init__.py").write_text("")  # type: ignore[operator]
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(os.fspath(tmp_path))
    assert "'mychain'" in str(service.usable(here, "mychain.steps:Chain"))
    assert service.usable(here, "raypipe.examples.processors:Redact") is None, "installed"
    assert service.usable(here, "chain.py:Chain") is None, "a file: made absolute"
    assert service.usable(here, None) is None


def test_finished_runs_nobody_reads_are_dropped_after_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    box = _mailbox()
    clock = [1000.0]
    monkeypatch.setattr(service.time, "monotonic", lambda: clock[0])
    first, _ = box.submit({})
    box.take(0.0)
    box.post(first, 0, "done", {})  # its command was killed: never read
    clock[0] += service.KEEP_UNREAD_S + 1
    second, _ = box.submit({})
    box.take(0.0)
    box.post(second, 0, "done", {})
    assert box.events(first, 0, 0.0) == []
    assert box.events(second, 0, 0.0) == [("done", {})]


def test_a_submitted_job_runs_its_video_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ray job submit` drivers run side by side as their own jobs: never queued behind a
    service (Ray's job supervisor sets this variable in each job's driver)."""
    import ray
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    assert service.JOB_DRIVER_VARIABLE == RAY_JOB_CONFIG_JSON_ENV_VAR
    monkeypatch.setenv(RAY_JOB_CONFIG_JSON_ENV_VAR, '{"runtime_env": {}}')
    assert service.hand_over("in.mp4", "out.mp4", {}) is None
    assert not ray.is_initialized(), "it did not even look for a service"


def test_a_closing_service_serves_what_is_queued_and_takes_nothing_new() -> None:
    box = _mailbox()
    queued, _ = box.submit({"input": "a"})
    box.close()
    assert box.submit({"input": "b"}) == ("", 0), "refused: the command runs it itself"
    assert box.take(0.0) == (queued, {"input": "a"})
    assert box.take(0.0) is None


def test_the_command_and_the_service_default_to_the_same_max_runs() -> None:
    from raypipe.cli import build_parser

    assert build_parser().parse_args(["serve"]).max_runs == service.DEFAULT_MAX_RUNS


def _clocked(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    clock = [1000.0]
    monkeypatch.setattr(service.time, "monotonic", lambda: clock[0])
    return clock


def test_a_running_run_whose_command_stopped_reading_is_to_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A command killed with SIGKILL asks for no more news: after ``ABANDONED_S`` its run is
    to stop (the service's watcher interrupts it), while one that reads goes on."""
    clock = _clocked(monkeypatch)
    box = _mailbox()
    followed, _ = box.submit({"input": "a"})
    box.take(0.0)
    for _ in range(3):  # the command reads every POLL_S: never abandoned
        clock[0] += service.ABANDONED_S / 2
        box.events(followed, 0, 0.0)
        assert box.wait_cancel(followed, 0.0) == ""
    clock[0] += service.ABANDONED_S + 1  # then it is killed
    assert box.wait_cancel(followed, 0.0) == "abandoned"
    box.cancel(followed)
    assert box.wait_cancel(followed, 0.0) == "cancelled", "asked: said as such"


def test_a_queued_run_whose_command_stopped_reading_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _clocked(monkeypatch)
    box = _mailbox()
    box.submit({"input": "running"})
    box.take(0.0)
    gone, _ = box.submit({"input": "gone"})
    waiting, _ = box.submit({"input": "waiting"})
    clock[0] += service.ABANDONED_S + 1
    box.events(waiting, 0, 0.0)  # its command still follows it; gone's was killed
    assert box.take(0.0) == (gone, None), "dropped: the service only logs it"
    assert box.take(0.0) == (waiting, {"input": "waiting"})
    assert box.info()["running"] == waiting
