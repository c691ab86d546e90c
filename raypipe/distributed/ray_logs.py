"""Ray's own log lines go to the Ray session's log files, not the terminal.

A run shows raypipe's progress and one-line results; what Ray itself says goes to the
files of the Ray session (``/tmp/ray/session_latest/logs`` for a local Ray), where Ray
keeps everything else it logs. ``verbose=True`` (the CLI's ``--verbose``) leaves all of it
on the terminal as Ray prints it. Where each kind of line goes by default:

=============================  ==============================================================
Ray's lines                    where they go
=============================  ==============================================================
the ``ray`` Python loggers     ``logs/raypipe-driver.log`` (their console handlers are muted
                               while raypipe starts Ray and while a run's rows come back)
Ray Data's console lines       ``logs/ray-data/ray-data.log`` only (Ray Data's own file;
                               its console handler is muted the same way); Ray Data's own
                               progress bars are off (:func:`~raypipe.distributed.dataset.
                               build_dataset`): raypipe shows its own
Ray's errors for the driver    ``logs/raypipe-driver.log`` (its error listener's
(``(raylet) A worker died``)   ``(raylet) ...`` lines, about retried tasks and dead workers)
the driver's C++ core worker   ``logs/raypipe-driver.log`` (and Ray's own
(``[date time E pid tid]``)    ``python-core-driver-*.log``): a filter on file descriptor 2
                               while a run's rows come back moves these lines, and passes
                               every other byte through unchanged
workers' output                the workers' log files: raypipe's Ray is started with
                               ``log_to_driver=False`` unless verbose
=============================  ==============================================================

The C++ line every run used to show, ``E ... core_worker.cc ... Actor ... has constructor
arguments in the object store and max_restarts > 0``, is Ray Data's: its actor pool passes
each inference actor its map function (raypipe's model bytes ride inside it) and its
DataContext as objects in the object store, and restarts actors that die
(``max_restarts=-1``); Ray warns, once per process, that a restart would fail if those
objects were lost. Ray Data holds both references for the whole run, so a restarted actor
reads them back (tests/distributed/test_node_failure.py kills a node mid-run). Sending the
model some other way would not remove the line; turning restarts off would.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

LOG_NAME = "raypipe-driver.log"
RAY_LOGGERS = ("ray", "ray.data")
# Ray's C++ log lines: ``[2026-11-30 07:14:07,245 E 32580 32580] core_worker.cc:2465: ...``
CXX_LINE = re.compile(rb"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [DIWEF] \d+ \d+\] ")
_HEADER_BYTES = 40  # longer than any C++ line header: a prefix that long decides


def session_logs_dir() -> str | None:
    """The log directory of the Ray session this process is connected to, or ``None``."""
    try:
        import ray

        node = ray._private.worker._global_node  # where Ray Data finds it too
        return os.path.join(node.get_session_dir_path(), "logs") if node is not None else None
    except Exception:  # noqa: BLE001 - no session (not connected, or a Ray client)
        return None


class _SessionLog:
    """Appends text to ``logs/raypipe-driver.log`` of the session, holding it until the
    session's directory is known (while Ray starts)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[str] = []

    def write(self, text: str) -> None:
        with self._lock:
            self._held.append(text)
            self._write_held()

    def close(self) -> str:
        """Write what is held; return what could not be (no session after all)."""
        with self._lock:
            self._write_held()
            text, self._held = "".join(self._held), []
            return text

    def _write_held(self) -> None:
        logs = session_logs_dir()
        if logs is None or not self._held:
            return
        try:
            with open(os.path.join(logs, LOG_NAME), "a", encoding="utf-8") as f:
                f.write("".join(self._held))
        except OSError:  # the session's directory is gone (Ray shut down): keep holding
            return
        self._held.clear()


class _ToSessionLog(logging.Handler):
    def __init__(self, log: _SessionLog, formatter: logging.Formatter | None) -> None:
        super().__init__()
        self.log = log
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.log.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _mute(record: logging.LogRecord) -> bool:
    """Drop Ray's records only: a console handler on Ray's logger may be shared (pytest's
    capture, a handler Ray copied from the root logger) and must pass everyone else's."""
    return not (record.name == "ray" or record.name.startswith("ray."))


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(
        handler, logging.FileHandler
    )


@contextmanager
def _loggers_to(log: _SessionLog) -> Iterator[None]:
    """Ray's console handlers muted; the ``ray`` logger's records go to ``log`` instead
    (Ray Data's already go to its own session file)."""
    muted: list[logging.Handler] = []
    added: list[tuple[logging.Logger, logging.Handler]] = []
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        consoles = [h for h in logger.handlers if _is_console(h)]
        for handler in consoles:
            handler.addFilter(_mute)
            muted.append(handler)
        if consoles and name == "ray":
            handler = _ToSessionLog(log, consoles[0].formatter)
            logger.addHandler(handler)
            added.append((logger, handler))
    try:
        yield
    finally:
        for logger, handler in added:
            logger.removeHandler(handler)
        for handler in muted:
            handler.removeFilter(_mute)


class _Stderr:
    """File descriptor 2 through a pipe: Ray's C++ lines to the session log, every other
    byte to the real stderr as soon as it arrives (partial lines too: progress lines)."""

    def __init__(self, log: _SessionLog) -> None:
        self.log = log
        sys.stderr.flush()
        self.saved = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self.read_end = read_end
        self.thread = threading.Thread(target=self._pump, name="raypipe-stderr", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self.read_end, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self._out(pending)
                break
            pending = self._route(pending + chunk)
        os.close(self.read_end)

    def _route(self, data: bytes) -> bytes:
        """Write out what is decided; return an unfinished line that may be Ray's."""
        out = bytearray()
        while data:
            end = data.find(b"\n") + 1
            if end == 0:  # an unfinished line: hold it only while it may become Ray's
                if data[:1] == b"[" and (len(data) < _HEADER_BYTES or CXX_LINE.match(data)):
                    break
                out += data
                data = b""
                break
            line, data = data[:end], data[end:]
            if CXX_LINE.match(line):
                self.log.write(line.decode("utf-8", "replace"))
            else:
                out += line
        self._out(bytes(out))
        return data

    def _out(self, data: bytes) -> None:
        while data:
            try:
                data = data[os.write(self.saved, data) :]
            except OSError:
                return

    def close(self) -> None:
        try:
            sys.stderr.flush()
        finally:
            os.dup2(self.saved, 2)  # closes the pipe's write end: the pump drains and ends
            self.thread.join(timeout=5)
            os.close(self.saved)


class _ErrorLinesPatch:
    """Ray's own printer, put back by the last run out, and the log its lines go to."""

    def __init__(self, printer: Any, log: _SessionLog) -> None:
        self.printer, self.log, self.runs = printer, log, 1

    def print(self, data: dict[str, object], ignore_prefix: bool = False) -> None:
        lines = data.get("lines")
        for line in lines if isinstance(lines, list) else []:
            self.log.write(f"({data.get('pid', 'ray')}) {line}\n")


_ERROR_LINES_LOCK = threading.Lock()
_error_patch: _ErrorLinesPatch | None = None  # while Ray's printer is patched


@contextmanager
def _error_lines_to(log: _SessionLog) -> Iterator[None]:
    """While inside, the error lines Ray sends every driver (``(raylet) A worker died or
    was killed while executing a task ...``, ``Task ... failed. There are 3 retries
    remaining``: its error listener's, printed on the terminal whatever ``log_to_driver``
    says, even under ``--quiet``; a sweep) go to the session's log (``log``, the first
    run's where runs overlap: a service's, on threads of their own; the same file). Ray's
    listener thread prints them through ``ray._private.worker.print_to_stdstream``, looked
    up at each call: patched by the first run in, put back by the last out."""
    global _error_patch
    try:
        import ray._private.worker as ray_worker
    except ImportError:  # (no Ray: nothing prints them)
        yield
        return
    if getattr(ray_worker, "print_to_stdstream", None) is None:
        yield  # another Ray: its lines as they come
        return
    with _ERROR_LINES_LOCK:
        if _error_patch is not None:
            _error_patch.runs += 1
        else:
            _error_patch = _ErrorLinesPatch(ray_worker.print_to_stdstream, log)
            ray_worker.print_to_stdstream = _error_patch.print
    try:
        yield
    finally:
        with _ERROR_LINES_LOCK:
            assert _error_patch is not None
            _error_patch.runs -= 1
            if not _error_patch.runs:
                ray_worker.print_to_stdstream = _error_patch.printer
                _error_patch = None


def _fd2_usable() -> bool:
    try:
        os.fstat(2)
    except OSError:
        return False
    return True


@contextmanager
def ray_lines_to_files(*, verbose: bool, stderr: bool = True) -> Iterator[None]:
    """While inside, Ray's log lines go to the session's log files, not the terminal (see
    the module docstring); ``verbose`` changes nothing. ``stderr=False`` leaves file
    descriptor 2 alone (around ``ray.init``, whose child processes would inherit the pipe)."""
    if verbose:
        yield
        return
    log = _SessionLog()
    pipe = _Stderr(log) if stderr and _fd2_usable() else None
    try:
        with _loggers_to(log), _error_lines_to(log):
            yield
    finally:
        if pipe is not None:
            pipe.close()
        left = log.close()  # no session after all (Ray failed to start): say it here
        if left:
            sys.stderr.write(left)
