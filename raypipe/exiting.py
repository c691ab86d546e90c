"""Ending a raypipe process: what Python does at exit, minus the interpreter's finalization.

:func:`end_process` is how the ``raypipe`` command (and the jobs under ``jobs/``) ends. It
does what Python's own exit does first, in the same order: wait for the non-daemon threads
(``threading``'s shutdown), run the ``atexit`` handlers (Ray's ``ray.shutdown``, logging's
flush and close, temporary directories' clean-up), flush the standard streams. Then it
leaves with ``os._exit`` instead of finalizing the interpreter, which tears down every module
and object one by one while the native threads that Ray leaves behind after
``ray.shutdown()`` still run:

- Time: finalization took 0.4-0.45 s after each ``raypipe run`` on a 2-core machine (a
  process that had imported Ray, Ray Data, pandas, pyarrow and ONNX Runtime); a short run
  on a running Ray took 4.47 s before and 3.94 s after (medians of 5,
  benchmarks/README.md, session 13).
- Safety: a crash there (a segmentation fault after all the work was done; seen once at the
  end of the test suite, :mod:`raypipe.testing.pytest_exit`) would turn a finished run into
  exit status 139, and a ``ray job submit`` job into a failed one.

Ray's own worker processes end the same way (``os._exit``, their core worker never
destroyed). Code that uses raypipe as a library (``process_video`` in a notebook or a
service) is not affected: only the command's entry point calls this.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn


@contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) while inside and take it on the way out, for steps that cannot
    be cut short and undone: ``ray.init``, cut short, left the process's core worker made
    in C++ but unknown to Python, which ``ray.shutdown()`` cannot end, and the next
    ``ray.init`` in the process (a notebook's next cell) aborted the interpreter ("The
    process is already initialized for core worker"); an import of Ray Data cut short left
    it half made (``module 'ray.data' has no attribute '_internal'`` at the next call).

    Python's own SIGINT handler is swapped for one that only notes the signal, and put
    back after, and called then if the signal came (the KeyboardInterrupt, or a kernel's
    own handler). Blocking the signal would not do: any thread that does not block it
    takes it (a notebook kernel's), and Python raises it in the main thread all the same.
    Main thread only, where handlers can be set; the wait is the step's (seconds)."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is None  # a handler not Python's: not ours to swap
    ):
        yield
        return
    came: list[FrameType | None] = []

    def note(signum: int, frame: FrameType | None) -> None:
        came.append(frame)

    try:
        before = signal.signal(signal.SIGINT, note)
    except (ValueError, OSError):  # no signals here (an embedded interpreter)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
        if came and callable(before):
            before(signal.SIGINT, came[-1])  # Python's default raises KeyboardInterrupt
        elif came and before == signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGINT)


class Terminated(KeyboardInterrupt):
    """The process was sent SIGTERM (``kill PID``, ``ray job stop``, a container or a pod
    being stopped), raised in the main thread once :func:`raise_on_sigterm` is in place. A
    KeyboardInterrupt, so whatever Ctrl-C undoes is undone for it too: a run's clean-up,
    a handed-over run cancelled in the service, the local Ray shut down. The command says
    ``raypipe: terminated (SIGTERM)`` and ends with status 143 (128 + 15, as a shell
    reports a process that SIGTERM ended).

    Without it, Ray's own driver handler (``ray.init`` puts it there) made the command end
    with ``sys.exit(15)`` after Ray's native failure handler had printed a stack dump
    (``*** SIGTERM received at time=... PC: @ ...``) and nothing of raypipe's."""


def raise_on_sigterm() -> None:
    """From now on SIGTERM raises :class:`Terminated` in the main thread (call it there),
    and so does SIGHUP (the terminal closed, an SSH session dropped) unless the process
    ignores it (``nohup``): it ended the command at once, and a run handed to ``raypipe
    serve`` went on without it, its output written for no one.
    :func:`raypipe.distributed.cluster.connect` keeps this handler through ``ray.init``.
    Only the command's entry point calls it: from then on the process is the command's
    (:func:`in_command`)."""
    _COMMAND.append(True)
    signal.signal(signal.SIGTERM, _terminated)
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:
        signal.signal(signal.SIGHUP, _terminated)


_SIGNAL: list[int] = []  # the signal that came (one: a second does not count)
_COMMAND: list[bool] = []  # the process is the raypipe command's (raise_on_sigterm)


def in_command() -> bool:
    """Whether this process is the ``raypipe`` command's (or a job's entry point), which may
    end the process itself; a library caller's (a notebook's) may not be ended."""
    return bool(_COMMAND)


def sigterm_received() -> bool:
    """Whether SIGTERM (or SIGHUP) came since :func:`raise_on_sigterm`. What the command
    asks of a KeyboardInterrupt: a :class:`Terminated` raised inside a blocking ``ray.get``
    comes out of Ray as a plain KeyboardInterrupt (Ray turns the wait's interruption into
    one)."""
    return bool(_SIGNAL)


def terminating_signal() -> int:
    """The signal that ended the process (``SIGTERM`` or ``SIGHUP``); ``SIGTERM`` if none."""
    return _SIGNAL[0] if _SIGNAL else int(signal.SIGTERM)


def interrupted_status() -> int:
    """Say on stderr why the command stops after a KeyboardInterrupt (Ctrl-C, or
    :class:`Terminated`), in one line, and return its exit status: 130, or 128 + the
    signal (143 for SIGTERM, 129 for SIGHUP), as a shell reports them."""
    if sigterm_received():  # Terminated, or what Ray made of it
        ended_by = terminating_signal()
        print(f"raypipe: terminated ({signal.Signals(ended_by).name})", file=sys.stderr)
        return 128 + ended_by
    print("raypipe: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


EXIT_INTERRUPTED = 130


def _terminated(signum: int, frame: FrameType | None) -> None:
    # Once: a second SIGTERM (a supervisor repeating itself) must not cut the clean-up
    # short; SIGKILL still ends the process at once.
    if not _SIGNAL:
        _SIGNAL.append(signum)
        raise Terminated()


def ignore_interrupts() -> None:
    """From now on Ctrl-C, SIGTERM and SIGHUP do nothing in this process: it is ending
    (:func:`end_process`), with a status already decided, and a KeyboardInterrupt raised
    inside its last steps (Ray's shutdown) would end it with another status and half done."""
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def exit_status(code: object) -> int:
    """The status Python gives ``SystemExit(code)``: ``None`` 0, an int itself, anything else
    (a message, which the caller prints) 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1


def flush_standard_streams() -> None:
    """Flush stdout and stderr (and the originals, where something replaced them), ignoring
    a closed stream or a reader that went away."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):  # a broken pipe, or closed
                pass


_AFTER_RAY: list[Callable[[], object]] = []


def after_ray(sweep: Callable[[], object]) -> None:
    """Have the command call ``sweep`` once Ray is shut down (:func:`run_after_ray`), when no
    worker of the run can write any more: an interrupted run's actor finished the chunk it
    had and wrote its segment after the run had removed its work folder, which stayed (a
    CI run)."""
    _AFTER_RAY.append(sweep)


def run_after_ray(grace_s: float = 0.2) -> None:
    """The sweeps :func:`after_ray` registered, ``grace_s`` after Ray's shutdown (its
    workers end as their raylet does, a moment later); a failing one is skipped."""
    if not _AFTER_RAY:
        return
    time.sleep(grace_s)
    while _AFTER_RAY:
        sweep = _AFTER_RAY.pop(0)
        try:
            sweep()
        except Exception:  # noqa: BLE001, S112 - the command's status stands
            continue


def end_process(status: int) -> NoReturn:
    """End the process with ``status`` after the exit steps that matter (module docstring).
    Call it from the main thread only, as the last thing the process does."""
    threading._shutdown()  # the interpreter's own first exit step calls it by this name
    atexit._run_exitfuncs()
    flush_standard_streams()
    os._exit(status)
