"""A warm driver on a running cluster: ``raypipe serve``, and ``raypipe run`` handing to it.

Each ``raypipe run --address ...`` is a new Ray job. Ray binds worker processes to a job,
so every run starts its own decode and encode workers, and each imports Ray Data (about a
second of CPU) before its first task; the driver itself imports Ray Data and starts Ray
Data's executor. On a running 2-core cluster that put the first decode 3.3-3.9 s after the
command, against 0.2-0.4 s for a second run in a driver that had already made one (a
notebook's case).

``raypipe serve --address ADDR`` is such a driver, kept running. It names a small actor, the
mailbox (:class:`Mailbox`, no CPU), in the ``raypipe`` namespace; ``raypipe run --address
ADDR`` finds it and hands the run over (:func:`hand_over`): the service runs it with
:func:`~raypipe.distributed.pipeline.process_video` in its own process, one run at a time in
arrival order, and sends back what the run prints (progress, warnings), then its summary or
its error, which the command prints as if it had run the video itself. Ctrl-C on the command
cancels its run (queued or running); Ctrl-C on the service stops it. A command that stops
following its run (killed with SIGKILL, its machine gone) reads nothing more: after
:data:`ABANDONED_S` seconds the service cancels that run too, or drops it if still queued, so
that it does not write an output nobody waits for while later runs wait behind it.

A ``ray job submit`` driver (``jobs/process_video.py``) never hands its run over: submitted
jobs run side by side, as their own jobs. The command hands a run over only when the
service runs on the same machine and from the same raypipe install (local paths and the
code then mean the same on both sides; paths are made absolute first), and its processor,
if any, is not a module found from the command's directory only; otherwise it runs the
video itself, as without a service, and says why. ``--no-service`` always runs it in the
command. The service runs with its own environment (``RAYPIPE_*`` variables,
credentials), not the command's.
"""

from __future__ import annotations

import _thread
import contextlib
import dataclasses
import io
import itertools
import logging
import os
import socket
import sys
import threading
import time
import traceback
from collections import deque
from typing import Any, TextIO, TypeGuard

import ray

from raypipe.distributed.prestart import start_for_next_run
from raypipe.errors import (
    ClusterError,
    RaypipeError,
    counted,
    one_line,
    with_worker_traceback,
)

log = logging.getLogger("raypipe")

SERVICE_NAME = "raypipe-service"
NAMESPACE = "raypipe"
TERMINAL = ("done", "error")
POLL_S = 1.0  # how long one mailbox call waits for news
# Set by Ray's job supervisor in the driver of every `ray job submit` job: those run as
# their own jobs, side by side, never queued behind a service's runs.
JOB_DRIVER_VARIABLE = "RAY_JOB_CONFIG_JSON_ENV_VAR"
KEEP_UNREAD_S = 600.0  # a finished run's events nobody read (the command was killed) go then
ABANDONED_S = 20.0  # a run whose command read nothing for this long is cancelled
WATCHER_PREFIX = "raypipe-cancel-"  # the thread that watches a run for its cancellation
CANCELLING = threading.Event()  # set by that thread as it interrupts the main thread
CANCEL_WAIT_S = 60.0  # how long a cancelled command waits for its run to stop


class Mailbox:
    """Between the commands and the service: the queue of runs, each run's events in order
    (numbered by the service, as a threaded actor may run two posts out of order), and the
    cancellations. Runs as a threaded Ray actor (``max_concurrency``) so that a waiting call
    blocks only its own thread."""

    def __init__(self, info: dict[str, Any]) -> None:
        self._info = info
        self._cv = threading.Condition()
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._events: dict[str, dict[int, tuple[str, Any]]] = {}
        self._cancelled: set[str] = set()
        self._running: str | None = None
        self._ended: dict[str, float] = {}  # finished runs whose end was not read yet
        self._followed: dict[str, float] = {}  # when each run's command last asked for news
        self._closing = False  # the service restarts once the queue is empty: no new runs
        self._ids = itertools.count(1)

    def info(self) -> dict[str, Any]:
        with self._cv:
            return {**self._info, "queued": len(self._queue), "running": self._running}

    def submit(self, request: dict[str, Any]) -> tuple[str, int]:
        """Queue a run; its id and how many runs are ahead of it (``("", 0)``: the service
        is about to restart and takes no new run)."""
        with self._cv:
            if self._closing:
                return "", 0
            run_id = f"run-{next(self._ids)}"
            ahead = len(self._queue) + (self._running is not None)
            self._queue.append((run_id, request))
            self._events[run_id] = {}
            self._followed[run_id] = time.monotonic()
            self._cv.notify_all()
            return run_id, ahead

    def close(self) -> None:
        """Take no new run: the service serves those queued, then restarts."""
        with self._cv:
            self._closing = True

    def take(self, timeout: float) -> tuple[str, dict[str, Any] | None] | None:
        """The next run for the service, or ``None`` after ``timeout`` seconds without one.
        A run whose command no longer follows it (:meth:`_abandoned`) comes with ``None`` for
        its request: it is dropped, and the service only logs it."""
        with self._cv:
            self._cv.wait_for(lambda: bool(self._queue), timeout)
            if not self._queue:
                return None
            run_id, request = self._queue.popleft()
            if self._abandoned(run_id):
                self._forget(run_id)
                return run_id, None
            self._running = run_id
            return run_id, request

    def _abandoned(self, run_id: str) -> bool:
        """Whether the run's command asked for no news for :data:`ABANDONED_S` seconds: it
        asks every :data:`POLL_S` while it follows the run, so it is gone."""
        last = self._followed.get(run_id)
        return last is not None and time.monotonic() - last > ABANDONED_S

    def _forget(self, run_id: str) -> None:
        self._events.pop(run_id, None)
        self._ended.pop(run_id, None)
        self._followed.pop(run_id, None)
        self._cancelled.discard(run_id)

    def post(self, run_id: str, seq: int, kind: str, payload: Any) -> None:
        with self._cv:
            self._events.setdefault(run_id, {})[seq] = (kind, payload)
            if kind in TERMINAL:
                if self._running == run_id:
                    self._running = None
                now = time.monotonic()
                self._ended[run_id] = now
                for old in [r for r, t in self._ended.items() if now - t > KEEP_UNREAD_S]:
                    self._forget(old)
            self._cv.notify_all()

    def events(self, run_id: str, since: int, timeout: float) -> list[tuple[str, Any]]:
        """The run's events from number ``since`` on, waiting up to ``timeout`` s for one."""
        with self._cv:
            events = self._events.get(run_id, {})
            if run_id in self._followed:
                self._followed[run_id] = time.monotonic()
            self._cv.wait_for(lambda: since in events, timeout)
            out = []
            while since + len(out) in events:
                out.append(events[since + len(out)])
            if out and out[-1][0] in TERMINAL:
                self._forget(run_id)
            elif run_id in self._followed:
                self._followed[run_id] = time.monotonic()
            return out

    def cancel(self, run_id: str) -> None:
        """Drop the run if it is still queued (its error event says so), else flag it for the
        service, which interrupts it."""
        with self._cv:
            for item in self._queue:
                if item[0] == run_id:
                    self._queue.remove(item)
                    message = {"type": "KeyboardInterrupt", "message": "cancelled while queued"}
                    self._events.setdefault(run_id, {})[0] = ("error", message)
                    break
            else:
                self._cancelled.add(run_id)
            self._cv.notify_all()

    def wait_cancel(self, run_id: str, timeout: float) -> str:
        """Why the running ``run_id`` is to stop, waiting up to ``timeout`` s for a reason:
        ``"cancelled"`` (its command asked), ``"abandoned"`` (its command no longer follows
        it: :meth:`_abandoned`), or ``""``."""

        def why() -> str:
            if run_id in self._cancelled:
                return "cancelled"
            return "abandoned" if self._abandoned(run_id) else ""

        with self._cv:
            return self._cv.wait_for(why, timeout)


def _install() -> str:
    """Which raypipe install this process runs: the package's directory."""
    import raypipe

    return os.path.dirname(os.path.abspath(raypipe.__file__))


def _identity() -> dict[str, Any]:
    import raypipe

    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "install": _install(),
        "version": raypipe.__version__,
    }


def find_mailbox() -> Any | None:
    """The running service's mailbox on the connected cluster, or ``None``."""
    try:
        return ray.get_actor(SERVICE_NAME, namespace=NAMESPACE)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------
# The service


class _Forward(io.TextIOBase):
    """What the run writes to stderr (progress lines), sent to the command as ``text``
    events; a TTY when the command's stderr is one, so progress rewrites its line there."""

    def __init__(self, post: Any, *, tty: bool) -> None:
        self._post = post
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            self._post("text", text)
        return len(text)


class _ForwardLog(logging.Handler):
    """raypipe's log records during a run (warnings), as the command itself prints them."""

    def __init__(self, post: Any) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter("raypipe: %(levelname)s: %(message)s"))
        self._post = post

    def emit(self, record: logging.LogRecord) -> None:
        self._post("text", self.format(record) + "\n")


def summary_line(output: str, stats: dict[str, Any]) -> str:
    """The line ``raypipe run`` ends with (without ``--quiet``)."""
    return (
        f"wrote {output}: {counted(stats['frames'], 'frame')} in "
        f"{counted(stats['chunks'], 'chunk')}, {stats['wall_seconds']:.1f}s "
        f"({stats['fps']:.1f} fps) on {_workers(stats)} [{', '.join(stats['providers'])}]"
    )


def _workers(stats: dict[str, Any]) -> str:
    """``2 workers``, or ``1 of 2 workers`` where fewer actors ran chunks than were asked
    (too few chunks for them, or no free CPU or GPU for the others)."""
    workers, used = int(stats["workers"]), int(stats.get("actors") or 0)
    if 0 < used < workers:
        return f"{used} of {counted(workers, 'worker')}"
    return counted(workers, "worker")


def stats_summary(stats: Any) -> dict[str, Any]:
    """What :func:`summary_line` needs of a :class:`~raypipe.distributed.stats.RunStats`."""
    return {
        "frames": stats.frames,
        "chunks": stats.chunks,
        "wall_seconds": stats.wall_seconds,
        "fps": stats.fps,
        "workers": stats.workers,
        "actors": stats.actors_used,
        "providers": list(stats.providers),
    }


class _Run:
    """One handed-over run inside the service: its events numbered in order, and a watcher
    thread that turns the command's cancel into a KeyboardInterrupt in the main thread."""

    def __init__(self, mailbox: Any, run_id: str) -> None:
        self.mailbox, self.run_id = mailbox, run_id
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self.finished = threading.Event()
        self.why_stopped = ""  # set by the watcher: what its interrupt means
        self.written: Any = None  # the run's stats once its output is in place
        self._cancelling = threading.Lock()  # a cancel, or the output put in place

    def output_written(self, stats: Any) -> None:
        """The run's output is in place (:func:`~raypipe.distributed.pipeline.
        when_output_written`): a cancel from now on is too late, and the run stands."""
        with self._cancelling:
            self.written = stats

    def post(self, kind: str, payload: Any) -> None:
        with self._lock:  # numbers in the order the events happened
            self.mailbox.post.remote(self.run_id, next(self._seq), kind, payload)

    def watch(self) -> None:
        while not self.finished.is_set():
            try:
                hit = ray.get(self.mailbox.wait_cancel.remote(self.run_id, POLL_S))
            except Exception:  # noqa: BLE001 - the mailbox is gone: the service is ending
                return
            if hit and not self.finished.is_set():
                with self._cancelling:
                    if self.written is not None:  # too late: the output is in place (a
                        return  # Ctrl-C as the run ended left it, called cancelled: a sweep)
                    self.why_stopped = hit
                    CANCELLING.set()  # what the KeyboardInterrupt below is: not Ctrl-C
                    _thread.interrupt_main()
                return


def run_one(mailbox: Any, run_id: str, request: dict[str, Any]) -> str:
    """Run one handed-over video; post its events; return how it ended (for the log line).
    A run that completed has the processes for the next one started
    (:func:`~raypipe.distributed.prestart.start_for_next_run`)."""
    from raypipe.distributed.pipeline import process_video, when_output_written

    run = _Run(mailbox, run_id)
    watcher = threading.Thread(target=run.watch, name=WATCHER_PREFIX + run_id, daemon=True)
    watcher.start()
    handler = _ForwardLog(run.post)
    logger = logging.getLogger("raypipe")
    logger.addHandler(handler)
    started = time.monotonic()
    try:
        try:
            options = _in_commands_folder(request)
            forward = _Forward(run.post, tty=bool(request.get("tty")))
            with contextlib.redirect_stderr(forward), when_output_written(run.output_written):
                stats = process_video(request["input"], request["output"], **options)
        finally:
            run.finished.set()
            logger.removeHandler(handler)
        run.post("done", stats_summary(stats))
        start_for_next_run(stats)
        return f"done in {time.monotonic() - started:.1f}s"
    except KeyboardInterrupt:
        if not CANCELLING.is_set():  # Ctrl-C on the service itself: tell the command, stop
            run.post("error", {"type": "ClusterError", "message": "the raypipe service stopped"})
            raise
        CANCELLING.clear()
        if run.written is not None:  # the interrupt came as the output was put in place
            run.post("done", stats_summary(run.written))
            return "done (a cancel came as it ended)"
        if run.why_stopped == "abandoned":  # posted for a command that was only suspended
            message = (
                f"the raypipe service cancelled the run: this command asked for no news of "
                f"it for {ABANDONED_S:.0f}s (suspended?), as a killed one would not"
            )
            run.post("error", {"type": "ClusterError", "message": message})
            return "cancelled: its command stopped following it (killed?)"
        run.post("error", {"type": "KeyboardInterrupt", "message": "cancelled"})
        return "cancelled"
    except RaypipeError as e:
        detail = getattr(e, "detail", "") or traceback.format_exc()
        run.post("error", {"type": type(e).__name__, "message": one_line(e), "detail": detail})
        return f"failed: {type(e).__name__}: {one_line(e)}"
    except Exception as e:  # noqa: BLE001 - not foreseen: the command reports it as its own
        error = {"type": type(e).__name__, "message": one_line(e), "unexpected": True,
                 "detail": traceback.format_exc()}  # fmt: skip
        run.post("error", error)
        return f"failed (unexpected): {type(e).__name__}: {one_line(e)}"


def _in_commands_folder(request: dict[str, Any]) -> dict[str, Any]:
    """The run's options with its processor's relative paths (``ctx.session("m.onnx")``)
    taken in the command's working directory, which ``raypipe run`` does for a run of its
    own; in the service they were looked for in the service's (a sweep)."""
    options = dict(request["options"])
    if options.get("processor") is not None and request.get("cwd"):
        from raypipe.infer.processor_refs import processor_ref

        ref = processor_ref(options["processor"])
        options["processor"] = dataclasses.replace(ref, base_dir=str(request["cwd"]))
    return options


WARM_UP_FRAMES, WARM_UP_CHUNK = 16, 8


def warm_up() -> float:
    """Run a small generated sample (two chunks) through ``builtin:identity``, so that the
    first handed-over run finds Ray Data's executor and its actors' worker processes
    started (:func:`~raypipe.distributed.prestart.start_for_next_run`); its seconds."""
    import tempfile

    from raypipe.distributed.pipeline import process_video
    from raypipe.media.sample import write_sample

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="raypipe-serve-") as tmp:
        source = os.path.join(tmp, "sample.mp4")
        write_sample(source, n_frames=WARM_UP_FRAMES, width=96, height=64, gop=WARM_UP_CHUNK)
        stats = process_video(
            source,
            os.path.join(tmp, "out.mp4"),
            model="builtin:identity",
            chunk_frames=WARM_UP_CHUNK,
            quiet=True,
        )
    start_for_next_run(stats)
    return time.monotonic() - started


DEFAULT_MAX_RUNS = 200
RESTART_WAIT_S = 60.0


def serve(
    address: str, *, verbose: bool = False, max_runs: int = DEFAULT_MAX_RUNS,
    stream: TextIO | None = None,
) -> None:  # fmt: skip
    """Connect to the cluster at ``address``, name the mailbox, and run what comes until
    interrupted (KeyboardInterrupt propagates), or until ``max_runs`` runs are done: then
    it takes no new run, serves those queued and returns (the command starts it again, as a
    new process: a driver keeps some memory per run, 0.5 MiB here, in Ray and Ray Data).
    Raises :class:`ClusterError` when another service runs there."""
    from raypipe.config import RuntimeConfig
    from raypipe.distributed import pipeline  # noqa: F401 - imported once, before any run
    from raypipe.distributed.cluster import command_ends_if_cluster_lost, connect

    stream = stream or sys.stderr
    connect(RuntimeConfig(address=address), verbose=verbose)
    identity = _identity()
    _wait_for_no_service(identity)
    actor = ray.remote(Mailbox).options(
        name=SERVICE_NAME, namespace=NAMESPACE, num_cpus=0, max_concurrency=64
    )
    mailbox = actor.remote(identity)
    ray.get(mailbox.info.remote())
    warmed = warm_up()
    print(
        f"raypipe: warmed up in {warmed:.1f}s (a sample through builtin:identity); serving on "
        f"the Ray cluster at {address} (pid {identity['pid']}); `raypipe run --address "
        f"{address} ...` hands its runs here; Ctrl-C stops",
        file=stream,
        flush=True,
    )
    done = 0
    lost = "raypipe serve stops: start it again once the cluster is back"
    with command_ends_if_cluster_lost(stops=lost):  # its GCS gone: one line, status 1
        while True:
            try:
                if done == max_runs:  # from now on, serve what is queued only
                    ray.get(mailbox.close.remote())
                item = ray.get(mailbox.take.remote(0.0 if done >= max_runs else POLL_S * 5))
            except ray.exceptions.RayActorError as e:
                raise _mailbox_lost(address, e) from e
            if item is None:
                if done >= max_runs:
                    print(f"raypipe: restarting after {done} runs", file=stream, flush=True)
                    for thread in threading.enumerate():  # no Ray call may outlive its
                        if thread.name.startswith(WATCHER_PREFIX):  # shutdown
                            thread.join()
                    return
                continue
            run_id, request = item
            if request is None:
                print(f"raypipe: {run_id}: dropped before it started: its command stopped "
                      "following it (killed?)", file=stream, flush=True)  # fmt: skip
                continue
            print(f"raypipe: {run_id}: {request['input']} -> {request['output']}", file=stream)
            try:
                ended = run_one(mailbox, run_id, request)
            except KeyboardInterrupt:
                if not CANCELLING.is_set():
                    raise
                CANCELLING.clear()  # a cancel that came as the run ended: the run stands
                ended = "done (a cancel came as it ended)"
            print(f"raypipe: {run_id}: {ended}", file=stream, flush=True)
            done += 1


def _mailbox_lost(address: str, error: Exception) -> ClusterError:
    """What stops the service when its mailbox no longer answers: the cluster went away
    (its GCS does not take a connection) or the mailbox actor alone (``ray kill``, its
    worker process killed); either way no command can hand a run over any more, so the
    service ends, said in one line (a supervisor starts it again)."""
    from raypipe.distributed.cluster import check_reachable

    try:
        check_reachable(address)
    except OSError as e:
        return ClusterError(
            f"the Ray cluster at {address} stopped answering ({e}); raypipe serve stops: "
            "start it again once the cluster is back"
        )
    return ClusterError(
        f"the raypipe service's mailbox actor on the cluster at {address} is gone "
        f"({type(error).__name__}: {one_line(error)}); raypipe serve stops: start it again"
    )


def _wait_for_no_service(identity: dict[str, Any]) -> None:
    """Return once no service is named on the cluster. The mailbox of this process's own
    previous life (a restart keeps the pid) goes with its Ray job: wait for that; another
    service is an error."""
    deadline = time.monotonic() + RESTART_WAIT_S
    while (existing := find_mailbox()) is not None:
        try:
            info = ray.get(existing.info.remote(), timeout=30)
        except ray.exceptions.RayActorError:
            info = {"host": identity["host"], "pid": identity["pid"]}  # going away
        except (AttributeError, ray.exceptions.RayTaskError, TypeError):
            info = {}  # an actor of that name with no info(): another program's
        if not _is_service(info):
            raise ClusterError(  # "KeyError: 'host' (unexpected)" (a sweep)
                f"an actor named {SERVICE_NAME!r} in namespace {NAMESPACE!r} on this cluster "
                "is not a raypipe service; stop whatever made it, or run without a service"
            )
        ours = (info["host"], info["pid"]) == (identity["host"], identity["pid"])
        if not ours:
            raise ClusterError(
                f"a raypipe service already runs on this cluster (pid {info['pid']} on "
                f"{info['host']}); stop it first, or hand runs to it"
            )
        if time.monotonic() > deadline:
            raise ClusterError(
                f"the service's previous mailbox was still there after {RESTART_WAIT_S:.0f}s"
            )
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------
# The command's side


def _absolute(value: Any) -> Any:
    """A local path made absolute (the service's working directory is not the command's);
    URLs, ``builtin:`` names and simulated models (``sim:hold_ms=N``) as they are."""
    if not isinstance(value, str) or "://" in value or value.startswith(("builtin:", "sim:")):
        return value
    return os.path.abspath(value)


PATH_OPTIONS = ("model", "stats_path", "engine_cache")


def _processor_absolute(target: Any) -> Any:
    """``path/to/file.py:Class`` with the file's path made absolute; ``module:Class`` as it is."""
    if not isinstance(target, str) or ":" not in target:
        return target
    where, _, name = target.rpartition(":")
    if where.endswith(".py"):
        return f"{_absolute(where)}:{name}"
    return target


def _rebuild_error(payload: dict[str, Any]) -> BaseException:
    """The run's error in the command, typed as in the service so that it prints the same."""
    import raypipe.errors as errors

    name, message = str(payload.get("type")), str(payload.get("message", ""))
    if name == "KeyboardInterrupt":
        return KeyboardInterrupt()
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, RaypipeError):
        error: BaseException = cls(message)
    else:  # not raypipe's: an exception of the same name, as the command would print it
        error = type(name, (Exception,), {})(message)
    return with_worker_traceback(error, str(payload.get("detail", "")))


def _is_service(info: object) -> TypeGuard[dict[str, Any]]:
    """Whether ``info`` is what a raypipe service's mailbox says of itself: another
    program's actor may hold the name."""
    return isinstance(info, dict) and {"host", "pid"} <= info.keys()


def usable(info: dict[str, Any] | None, processor: Any = None) -> str | None:
    """Why the command cannot hand its run to the service described by ``info``, or None."""
    here = _identity()
    if not _is_service(info):  # "it runs on None" (a sweep)
        return f"the actor named {SERVICE_NAME!r} there is not a raypipe service"
    if info.get("host") != here["host"]:
        return f"it runs on {info.get('host')}, not this machine"
    if info.get("install") != here["install"]:
        return f"it runs raypipe from {info.get('install')}, not {here['install']}"
    local = _module_from_here(processor)
    if local:
        return f"the processor's module {local!r} is found from this directory only"
    return None


def _module_from_here(processor: Any) -> str | None:
    """The top package of a ``package.module:Class`` processor when it is found in this
    command's working directory (on its ``sys.path`` through ``python -m``/the script's
    directory, not on the service's), else ``None``."""
    import importlib.util

    if not isinstance(processor, str) or ":" not in processor:
        return None
    where = processor.rpartition(":")[0]
    if where.endswith(".py"):
        return None  # a file: its path is made absolute
    top = where.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None) or next(
        iter(getattr(spec, "submodule_search_locations", None) or []), None
    )
    cwd = os.getcwd()
    if origin and os.path.abspath(origin).startswith(cwd + os.sep):
        return top
    return None


def hand_over(
    input: str, output: str, options: dict[str, Any], *, stream: TextIO | None = None
) -> dict[str, Any] | None:
    """Run the video on the connected cluster's service and return its summary
    (:func:`stats_summary`), printing what the run prints to ``stream``; ``None`` when there
    is no service, or one this command cannot use (it says why): the caller runs the video
    itself. Raises the run's error, typed as in the service."""
    stream = stream or sys.stderr
    if os.environ.get(JOB_DRIVER_VARIABLE):
        return None  # a `ray job submit` driver: the job is what the cluster runs and logs
    mailbox = find_mailbox()
    if mailbox is None:
        return None
    try:
        info = ray.get(mailbox.info.remote(), timeout=30)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as e:
        return _not_answering(e)  # stopping (its mailbox goes with it), or hung
    except (AttributeError, ray.exceptions.RayTaskError):
        info = None  # an actor of that name with no info(): another program's
    why_not = usable(info, options.get("processor"))
    if why_not is not None:
        log.warning("not handing the run to the raypipe service: %s; running it here", why_not)
        return None
    options = {k: v for k, v in options.items() if k != "address"}
    for name in PATH_OPTIONS:
        if options.get(name) is not None:
            options[name] = _absolute(options[name])
    options["processor"] = _processor_absolute(options.get("processor"))
    request = {
        "input": _absolute(input),
        "output": _absolute(output),
        "options": options,
        "tty": bool(getattr(stream, "isatty", lambda: False)()),
        "cwd": os.getcwd(),  # where a processor's ctx.session("m.onnx") looks
    }
    try:  # no timeout: a request the service took must not run here too
        run_id, ahead = ray.get(mailbox.submit.remote(request))
    except ray.exceptions.ActorDiedError as e:
        return _not_answering(e)  # it went as the request came: nothing runs it there
    except ray.exceptions.ActorUnavailableError as e:  # it may have taken it
        raise ClusterError(
            f"the raypipe service did not confirm it took the run ({one_line(e)}); it may "
            "still run it: see the service's log before running it again (--no-service "
            "runs it in this command)"
        ) from e
    if not run_id:
        log.warning("the raypipe service is restarting; running the video here")
        return None
    if not options.get("quiet"):
        queued = f"; {ahead} run(s) ahead of it" if ahead else ""
        print(f"raypipe: handed to the raypipe service (pid {info['pid']}){queued}", file=stream)
    since = 0
    try:
        return _follow(mailbox, run_id, stream)
    except KeyboardInterrupt:
        mailbox.cancel.remote(run_id)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while time.monotonic() < deadline:  # let the service stop the run before we go
            with contextlib.suppress(Exception):
                events = ray.get(mailbox.events.remote(run_id, since, POLL_S))
                since += len(events)
                done = [payload for kind, payload in events if kind == "done"]
                if done:  # it had written its output: the run stands (it was called
                    # interrupted, its output left in place; a sweep)
                    print("raypipe: the run had ended when the interrupt came; its output "
                          "stands", file=stream, flush=True)  # fmt: skip
                    return dict(done[0])
                if any(kind in TERMINAL for kind, _ in events):
                    break
        raise


def _not_answering(error: Exception) -> None:
    """A service named on the cluster that does not answer the command: the command runs
    the video itself (says so, and returns ``None`` for :func:`hand_over`)."""
    log.warning(
        "the raypipe service does not answer (%s: %s); running the video here",
        type(error).__name__,
        one_line(error),
    )


def _follow(mailbox: Any, run_id: str, stream: TextIO) -> dict[str, Any]:
    since = 0
    while True:
        try:
            events = ray.get(mailbox.events.remote(run_id, since, POLL_S))
        except ray.exceptions.RayActorError as e:
            raise ClusterError(
                "the raypipe service stopped during the run; its output was not written "
                "(run it again, with --no-service to run it in this command)"
            ) from e
        since += len(events)
        for kind, payload in events:
            if kind == "text":
                stream.write(payload)
                stream.flush()
            elif kind == "done":
                return dict(payload)
            elif kind == "error":
                raise _rebuild_error(payload)
