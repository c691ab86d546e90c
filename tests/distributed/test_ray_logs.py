"""Ray's C++ log lines leave file descriptor 2 for the session's log; every other byte
passes through unchanged, partial progress lines included (no Ray needed)."""

from __future__ import annotations

import io
import logging
import os

from raypipe.cli_help import TerminalHandler
from raypipe.distributed import ray_logs

E_LINE = (
    b"[2026-11-30 07:14:07,245 E 32580 32580] core_worker.cc:2465: Actor with class name: "
    b"'MapWorker(MapBatches(InferActor))' has constructor arguments in the object store and "
    b"max_restarts > 0.\n"
)


def _router(log: ray_logs._SessionLog) -> tuple[ray_logs._Stderr, int]:
    router = ray_logs._Stderr.__new__(ray_logs._Stderr)
    read_end, write_end = os.pipe()
    router.log, router.saved = log, write_end
    return router, read_end


def test_cxx_lines_go_to_the_log_and_the_rest_through() -> None:
    log = ray_logs._SessionLog()  # no Ray session in this process: what it gets is held
    router, read_end = _router(log)
    progress = b"\rclip.mp4: 24/120 frames (20%), 0.6 fps"
    left = router._route(b"raypipe: WARNING: something\n" + E_LINE + progress)
    assert left == b""  # a partial line that cannot be Ray's is passed on at once
    left = router._route(b"[2026-11-30 07:14")  # may become a C++ line: held
    assert left == b"[2026-11-30 07:14"
    left = router._route(left + b":08,001 W 1 2] raylet_client.cc:1: late\nnext\n")
    assert left == b""
    os.close(router.saved)
    passed = os.read(read_end, 1 << 16)
    os.close(read_end)
    assert passed == b"raypipe: WARNING: something\n" + progress + b"next\n"
    held = log.close()
    assert held == E_LINE.decode() + "[2026-11-30 07:14:08,001 W 1 2] raylet_client.cc:1: late\n"


def test_verbose_leaves_everything_alone() -> None:
    saved = os.dup(2)
    try:
        with ray_logs.ray_lines_to_files(verbose=True):
            assert os.path.sameopenfile(2, saved)  # fd 2 is not redirected
    finally:
        os.close(saved)


def test_raypipe_warnings_clear_a_progress_line_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, prefix in ((Tty(), "\r\x1b[K"), (io.StringIO(), "")):
        handler = TerminalHandler(stream)
        handler.setFormatter(logging.Formatter("raypipe: %(levelname)s: %(message)s"))
        handler.emit(logging.LogRecord("raypipe", logging.WARNING, "", 0, "late", None, None))
        assert stream.getvalue() == f"{prefix}raypipe: WARNING: late\n"


def test_a_handler_ray_shares_still_passes_raypipe_records() -> None:
    """Ray's logger may hold handlers it shares with the root logger (pytest's log capture,
    a handler copied from the root): muting Ray there must not mute raypipe's warnings."""
    seen = io.StringIO()
    shared = logging.StreamHandler(seen)
    ray_logger, raypipe_logger = logging.getLogger("ray"), logging.getLogger("raypipe.test")
    ray_logger.addHandler(shared)
    raypipe_logger.addHandler(shared)
    try:
        with ray_logs.ray_lines_to_files(verbose=False, stderr=False):
            ray_logger.warning("ray's own line")
            logging.getLogger("ray.data").warning("ray data's line")
            raypipe_logger.warning("raypipe's warning")
        ray_logger.warning("ray after")
    finally:
        ray_logger.removeHandler(shared)
        raypipe_logger.removeHandler(shared)
    assert seen.getvalue().splitlines() == ["raypipe's warning", "ray after"]


def test_rays_error_lines_for_the_driver_go_to_the_log() -> None:
    """Ray's error listener printed ``(raylet) A worker died or was killed while
    executing a task ...`` and ``Task assemble_video failed. There are 3 retries
    remaining`` on the terminal, under ``--quiet`` too (a sweep): while raypipe's run
    goes, they go to the session's log; afterwards Ray prints them again."""
    import ray._private.worker as ray_worker

    printing = ray_worker.print_to_stdstream
    log = ray_logs._SessionLog()
    with ray_logs._error_lines_to(log):
        ray_worker.print_to_stdstream(
            {"lines": ["A worker died or was killed while executing a task"], "pid": "raylet",
             "is_err": False}, ignore_prefix=False,
        )  # fmt: skip
    assert ray_worker.print_to_stdstream is printing
    assert log.close() == "(raylet) A worker died or was killed while executing a task\n"
    # runs that overlap (a service's, on threads): the first in patches, the last out puts
    # Ray's back, whatever the order they leave in
    first, second = ray_logs._SessionLog(), ray_logs._SessionLog()
    entered_first = ray_logs._error_lines_to(first)
    entered_first.__enter__()
    with ray_logs._error_lines_to(second):
        entered_first.__exit__(None, None, None)
        assert ray_worker.print_to_stdstream is not printing
        ray_worker.print_to_stdstream({"lines": ["late"], "pid": "raylet"}, ignore_prefix=False)
    assert ray_worker.print_to_stdstream is printing
    assert first.close() == "(raylet) late\n" and second.close() == ""
