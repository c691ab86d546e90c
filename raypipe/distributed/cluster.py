"""Connecting to Ray and sizing the inference actors for the cluster at hand.

Sizing is explicit because of a trap seen on small machines: actors that each take a CPU
slot can take them all, and the decode/encode tasks then wait forever. The pool is checked
against the cluster's resources before anything runs, with a message saying what to change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import ray

from raypipe import storage
from raypipe.config import (
    ModelConfig,
    RuntimeConfig,
    ray_address_from_env,
    ray_auth_mode_from_env,
    ray_client_refused,
)
from raypipe.distributed.ray_logs import ray_lines_to_files
from raypipe.errors import ClusterError, ConfigError, DeviceUnavailableError
from raypipe.exiting import ctrl_c_held, in_command

log = logging.getLogger("raypipe.distributed")

# Each raylet frees the objects nobody references any more in batches, every
# ``free_objects_period_milliseconds`` (Ray's default: 1000). Until then dead chunks stay in
# the object store: about one second of throughput in decoded and inferred frames (150 MB
# at 340 fps of 320x180 here, gigabytes at 4K), on top of what is really in flight.
# 100 ms keeps the store near the chunks in flight (benchmarks/memory.py measures both).
# It is a raylet setting: the local Ray gets it here, cluster nodes from the environment
# of `ray start` (RAY_free_objects_period_milliseconds, set in cluster/Dockerfile).
RAYLET_CONFIG: dict[str, int] = {"free_objects_period_milliseconds": 100}

PRELOADED_MODULES = ("ray.data", "raypipe.distributed.stages")
"""What every worker process of raypipe's local Ray imports as it starts, before it takes
any work (Ray's ``preload_python_modules``). The raylet starts worker processes while
``ray.init`` ends, before the driver has a task to give them; they used to import Ray Data
(pandas with it, 0.6 s of CPU here) and raypipe's stages (PyAV) only when their first task
arrived, so a run's first decode waited for those imports after the driver had waited
for its own. Preloaded, the workers import while the driver imports Ray Data and plans:
a 20 s 720p identity run's first decode came 4.46 s after the command against 5.78 s,
its wall 20.5 s against 22.3 s (medians of 5 alternated rounds; benchmarks/README.md,
session 32). Local Ray only: on a cluster, a job's workers start when its tasks come, so
a preload there gains nothing. Best effort: a module a worker cannot import is logged in
its log file and the worker goes on."""


_connecting = threading.Lock()
"""Held while :func:`connect` connects: runs started from several threads at once (a
notebook's thread pool) each started a local Ray, and the one that lost the race stopped
the other's processes; the survivor's next call had Ray start a default one, listening
beyond the loopback (a sweep). The later calls now find the first one's Ray."""


def connect(runtime: RuntimeConfig, *, verbose: bool = False) -> bool:
    """Use the Ray Ray is connected to, else ``address``/``RAY_ADDRESS``, else start a local one.

    Ray's own log lines go to the session's log files, workers' output included
    (``log_to_driver``), unless ``verbose`` (:mod:`raypipe.distributed.ray_logs`). The
    local Ray listens on the loopback address only and has token authentication on
    (:func:`start_local`). Returns whether this call started Ray (so the caller may shut
    it down). One thread at a time (:data:`_connecting`).
    """
    with _connecting:
        return _connect_once(runtime, verbose=verbose)


def _connect_once(runtime: RuntimeConfig, *, verbose: bool) -> bool:
    global _lines_to_driver, _remote_address
    if ray.util.client.ray.is_connected():  # a notebook's own ray.init("ray://...")
        raise ClusterError(ray_client_refused(""))
    if ray.is_initialized():
        _check_same_cluster(runtime.address)
        _check_local_sizes(runtime)
        return False
    _lines_to_driver = verbose
    address = runtime.address or ray_address_from_env()
    if not runtime.address and (address or "").startswith(("http://", "https://")):
        raise ClusterError(  # cluster/README exports it for `ray job submit` (a sweep)
            f"RAY_ADDRESS is {address!r}, the Jobs API's URL that `ray job submit` reads; a "
            "raypipe run connects to the cluster itself: pass --address HOST:6379, or unset "
            "RAY_ADDRESS for a local Ray"
        )
    if (address or "").startswith("ray://"):
        raise ClusterError(f"RAY_ADDRESS: {ray_client_refused(address)}")
    try:
        with ray_lines_to_files(verbose=verbose, stderr=False), _sigterm_handler_kept():
            if address:
                check_reachable(address)
                with ctrl_c_held():
                    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=verbose)
                _remote_address = address
            else:
                _check_temp_space(ray_temp_dir())
                start_local(runtime, verbose=verbose)
    except ClusterError:
        raise  # said already, with what to do (a token refused)
    except Exception as e:  # noqa: BLE001 - ray.init raises a bare Exception on a startup timeout
        if address:
            raise ClusterError(
                f"cannot reach the Ray cluster at {address!r}: {e}; check the address "
                "(HOST:6379, the GCS's) and that `ray status` works there"
            ) from e
        folder = ray_temp_dir()
        if isinstance(e, OSError) and e.errno in _UNWRITABLE:  # "try again" was no help
            raise ClusterError(
                f"cannot start a local Ray: it cannot write its session folder {folder} "
                f"({e.strerror}); set RAY_TMPDIR (or TMPDIR) to a folder it can write"
            ) from e
        raise ClusterError(
            f"cannot start a local Ray: {e}; a busy machine starts it slowly: try again, or "
            f"see the session's logs under {os.path.join(folder, 'session_latest', 'logs')}"
        ) from e
    return True


RAY_TEMP_MIN_FREE = 16 << 20
"""Bytes a local Ray's session folder needs free at the least (its logs, port files and
sockets): with less, Ray's start timed out after 30 s, read as a busy machine (a sweep)."""


def temp_space_problem(folder: str) -> str:
    """Why a local Ray cannot start with its session ``folder`` where it is: its disk (nearly)
    full; ``""`` otherwise (``raypipe doctor`` reports it too)."""
    existing = folder
    while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    try:
        usage = shutil.disk_usage(existing)
    except OSError:
        return ""  # Ray's own start says what is wrong
    free = usage.free
    if free >= RAY_TEMP_MIN_FREE or not usage.total:  # no disk (/sys): Ray's own error says
        return ""
    return (
        f"the disk of its session folder {folder} is full ({free >> 10} KiB free); free space "
        "there, or set RAY_TMPDIR (or TMPDIR) to a folder on another disk"
    )


def _check_temp_space(folder: str) -> None:
    problem = temp_space_problem(folder)
    if problem:
        raise ClusterError(f"cannot start a local Ray: {problem}")


_UNWRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT})


def ray_temp_dir() -> str:
    """The folder a local Ray keeps its sessions in, by Ray's own rule: ``RAY_TMPDIR``,
    else ``TMPDIR`` (on Linux), else ``/tmp``; then ``ray``. (Its logs were said to be
    under /tmp/ray whatever TMPDIR said; a sweep.)"""
    system = os.environ.get("RAY_TMPDIR") or (
        os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None
    )
    return os.path.join(system or "/tmp", "ray")


_lines_to_driver = True  # until connect() says otherwise: Ray's own default
_remote_address = ""  # the address connect() last joined a running cluster at


def _check_same_cluster(address: str | None) -> None:
    """Refuse an ``address`` other than the cluster this process's Ray is connected to: a
    notebook's second run with ``address=`` of a cluster ran on the local Ray its first
    run had started, without a word (a sweep). ``auto`` and ``local`` are not compared."""
    if not address or address in ("auto", "local") or "://" in address:
        return
    connected = ray.get_runtime_context().gcs_address
    (host, port), (at, at_port) = _host_port(address), _host_port(connected)
    here = {"127.0.0.1", ray.util.get_node_ip_address()}  # Ray names 127.0.0.1 by the node IP
    if port == at_port and (host == at or {host, at} <= here):
        return
    raise ConfigError(
        f"Ray is already connected to {connected} in this process, so address={address!r} "
        "would not be used; call ray.shutdown() first to run on that cluster"
    )


def _check_local_sizes(runtime: RuntimeConfig) -> None:
    """Refuse ``local_num_cpus``/``local_num_gpus`` that the Ray this process runs already
    does not have: they size a local Ray raypipe starts, and were dropped without a word
    on a notebook's own ``ray.init`` (a sweep)."""
    resources = ray.cluster_resources()
    for option, name in (("local_num_cpus", "CPU"), ("local_num_gpus", "GPU")):
        asked = getattr(runtime, option)
        have = int(resources.get(name, 0))
        if asked is not None and asked != have:
            raise ConfigError(
                f"{option}={asked} sizes the local Ray raypipe starts, but Ray is already "
                f"running in this process with {have} {name}s, so it would not be used; call "
                f"ray.shutdown() first, or leave {option} out"
            )


def _host_port(address: str) -> tuple[str, str]:
    host, _, port = address.rpartition(":")
    try:
        host = socket.gethostbyname(host or "127.0.0.1")
    except OSError:
        pass
    return host, port


@contextmanager
def _sigterm_handler_kept() -> Iterator[None]:
    """Put back, after ``ray.init``, the SIGTERM handler the process had set for itself (the
    ``raypipe`` command's, :func:`raypipe.exiting.raise_on_sigterm`; a service's own):
    ``ray.init`` replaces it with Ray's (``sys.exit(15)``, behind Ray's native failure
    handler, which prints a stack dump first). Where the process had none (the default,
    which would end it with no clean-up at all), Ray's stays. A SIGTERM that comes while
    ``ray.init`` runs meets Ray's handler: its ``SystemExit(15)`` goes to the process's own
    handler (the command's raises :class:`raypipe.exiting.Terminated`). Main thread only,
    where Python handles signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGTERM)
    own = callable(before)  # not SIG_DFL, SIG_IGN, or None (set outside Python)
    try:
        yield
    except SystemExit as e:
        if own and e.code == signal.SIGTERM:
            before(signal.SIGTERM, None)  # type: ignore[operator]
        raise
    finally:
        if before not in (signal.SIG_DFL, None):  # None: not Python's, not ours to put back
            signal.signal(signal.SIGTERM, before)


def end_for_exit() -> None:
    """Shut Ray down now, before the process ends, when :func:`connect` connected it without
    forwarding the workers' lines to this driver; otherwise leave it to Ray's ``atexit``
    handler. That handler sleeps 0.5 s first, "to make sure that log messages finish
    printing", lines that a raypipe driver only takes with ``verbose``; the explicit
    ``ray.shutdown()`` then took 0.2-0.4 s in all, against 0.6-0.9 s for the handler on
    this 2-core machine. The ``raypipe`` command calls this as it ends (so do the jobs).
    What Ray's driver prints meanwhile goes to the session's log files, as during the run:
    an interrupted archive's last line was followed by Ray's "Failed to push error to
    driver" lines (a sweep)."""
    if ray.is_initialized() and not _lines_to_driver:
        with ray_lines_to_files(verbose=False):
            ray.shutdown()


REACH_TIMEOUT_S = 10.0

CLUSTER_LOST_S = 15.0
"""How long a remote cluster's GCS may refuse connections before the command running on it
ends, saying so: Ray's own driver waits 60 s, then ends the process with status 1 and
nothing on the terminal (its reason only in the driver's log file; a sweep)."""
_WATCH_EVERY_S = 1.0


_watched: list[tuple[Callable[[], object], str]] = []
"""What the watch of :func:`command_ends_if_cluster_lost` does before it ends the process:
each block's ``cleanup`` and ``stops``, the outermost first (``raypipe serve``'s, then its
run's)."""


@contextmanager
def command_ends_if_cluster_lost(
    cleanup: Callable[[], object] = lambda: None,
    stops: str = "the run stops with nothing written at its output",
) -> Iterator[None]:
    """Inside, a ``raypipe`` command on a cluster other than its own local Ray ends (after
    ``cleanup``, status 1) with one line, ``raypipe: error: ClusterError: ...`` (ending
    with ``stops``, what becomes of the work), once the
    cluster's GCS has refused connections for :data:`CLUSTER_LOST_S`: its head went away.
    No Ray call can end the run cleanly then (each waits for the GCS), so the watch ends
    the process from its thread, as Ray would a minute later. A library caller's process
    (a notebook's) is never ended here: Ray's own rule stands. A block inside another (a
    run in ``raypipe serve``) adds its ``cleanup`` and ``stops`` to the watch already
    there; the line goes to the process's own stderr (a served run's is the command's:
    the service ended without a word, a sweep)."""
    entry = (cleanup, stops)
    if _watched:
        _watched.append(entry)
        try:
            yield
        finally:
            _watched.remove(entry)
        return
    given = _remote_address  # the user's spelling, for the message
    address = ray.get_runtime_context().gcs_address if ray.is_initialized() else ""
    local = _local_ray is not None and _local_ray[0] == address
    if not address or local or not given or not in_command():
        yield
        return
    host, _, port = address.rpartition(":")
    try:  # one that does not answer now is not watched (a GCS this machine cannot reach)
        _connect(host, port, timeout=2)
    except (OSError, ValueError):
        yield
        return
    stop = threading.Event()

    def watch() -> None:
        lost_since = 0.0
        while not stop.wait(_WATCH_EVERY_S):
            try:
                _connect(host, port, timeout=2)
                lost_since = 0.0
                continue
            except OSError as e:
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since < CLUSTER_LOST_S or stop.is_set():
                    continue
                reason = e
            blocks = list(reversed(_watched))  # the innermost first
            terminal = sys.__stderr__ or sys.stderr
            print(
                "\r\x1b[K" if terminal.isatty() else "",  # over a progress line's start
                f"raypipe: error: ClusterError: the Ray cluster at {given} stopped "
                f"answering ({reason}) for {CLUSTER_LOST_S:.0f} s: its head is gone; "
                + "; ".join(what for _, what in blocks),
                sep="",
                file=terminal,
                flush=True,
            )
            for clean, _ in blocks:
                with contextlib.suppress(Exception):
                    clean()
            storage.remove_held_locks()  # the output's, OUTPUT_DIR's: no unwinding below
            os._exit(1)

    _watched.append(entry)
    watcher = threading.Thread(target=watch, name="raypipe-cluster-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        _watched.remove(entry)


def _connect(host: str, port: str, *, timeout: float) -> None:
    """Open and close a TCP connection to ``host``:``port`` (``[...]`` around an IPv6
    address); ``OSError`` when nothing answers."""
    socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()


def check_reachable(address: str) -> None:
    """Fail at once, typed, when nothing listens at ``address`` (``HOST:PORT``): Ray itself
    retries an unreachable GCS for minutes before it says so. ``auto`` and other forms are
    left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host or "/" in host:
        return
    try:
        _connect(host, port, timeout=REACH_TIMEOUT_S)
    except OSError as e:
        raise ConnectionError(f"nothing answers at {host}:{port} ({e})") from e
    _check_token(address)


def _check_token(address: str) -> None:
    """Fail at once, saying what to set, when the GCS at ``address`` refuses this process's
    token (token authentication, which raypipe's cluster docs turn on): ``ray.init``
    retried for 20 s, printing a line of Ray's each second, and then said it could not
    connect, with advice about the address. One unauthenticated-or-not call, with the
    token Ray would send; anything else it meets is left to ``ray.init``."""
    try:
        import grpc
        from ray._private.authentication.grpc_authentication_client_interceptor import (
            _get_authentication_metadata_tuple,
        )
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

        metadata = _get_authentication_metadata_tuple()
    except Exception:  # noqa: BLE001 - another Ray: its own connect says what is wrong
        return
    channel = grpc.insecure_channel(address)
    try:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        stub.GetClusterId(
            gcs_service_pb2.GetClusterIdRequest(), timeout=REACH_TIMEOUT_S, metadata=metadata
        )
    except grpc.RpcError as e:
        if _not_a_gcs(e.code(), e.details() or ""):  # Ray retried it without end (a sweep)
            raise ClusterError(
                f"{address!r} answers, but not as a Ray cluster's GCS "
                f"({' '.join((e.details() or str(e.code())).split())[:160]}): give the "
                "address of `ray start --head --port PORT` (6379 by default); the "
                "dashboard's port (8265) is for `ray job submit`; the Ray client's (10001) "
                "cannot run Ray Data"
            ) from None
        if e.code() != grpc.StatusCode.UNAUTHENTICATED:
            return
        where = os.environ.get("RAY_AUTH_TOKEN_PATH") or "RAY_AUTH_TOKEN"
        raise ClusterError(
            f"the Ray cluster at {address!r} refuses this process's token ({where}): give "
            "it the cluster's, RAY_AUTH_TOKEN_PATH=FILE (or RAY_AUTH_TOKEN)"
            if metadata
            else f"the Ray cluster at {address!r} asks for a token (token authentication) "
            "and this process has none: set RAY_AUTH_MODE=token and "
            "RAY_AUTH_TOKEN_PATH=FILE, the cluster's token file (or RAY_AUTH_TOKEN)"
        ) from None
    finally:
        channel.close()


def _not_a_gcs(code: object, details: str) -> bool:
    """Whether a GCS call's failure says another server listens there: one that does not
    speak gRPC (the dashboard's HTTP: "Failed parsing HTTP/2"), or a gRPC server without
    the GCS's service (the Ray client's). A GCS that is slow or starting says otherwise."""
    import grpc

    if code == grpc.StatusCode.UNIMPLEMENTED:
        return True
    return code == grpc.StatusCode.UNAVAILABLE and "HTTP/2" in details


def start_local(runtime: RuntimeConfig, *, verbose: bool = False) -> None:
    """A new local Ray for this process: more logical CPUs than cores (decode and encode
    tasks are short and the inference actors hold their slot for the whole run, see the
    module docstring), raypipe's raylet config, no dashboard, and nothing reachable from
    the network:

    - Every Ray process binds the loopback address. Ray binds its gRPC servers and agents
      to all interfaces unless the node's address is the loopback one, and turns
      ``ray.init(_node_ip_address="127.0.0.1")`` into the machine's routable address;
      only its single-machine mode keeps the loopback address (the mode Ray uses on macOS
      and Windows, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which Ray reads once, at
      import, into ``ray_constants.ENABLE_RAY_CLUSTER``: raypipe sets that constant for
      this ``ray.init`` only). Nothing else can join this Ray, and nothing needs to.
    - Token authentication is on, as Ray's default for a new local cluster, but said
      explicitly (``RAY_AUTH_MODE=token`` unless the environment sets a mode), so Ray has
      no notice to print about it. Ray reads the mode into its cached config, which it
      refreshes the same way when it turns the default on itself.
    - Unless ``verbose``, no log monitor: that process only forwards the workers' log
      lines to drivers that ask for them, and raypipe's driver does not
      (``log_to_driver=False``); it globs the logs directory ten times a second all run
      long (1.7 s of CPU in a 53 s run on 2 cores). The workers' lines stay in their
      files.
    - No autoscaler monitor and no API server (the dashboard's head process, which Ray
      starts in its minimal mode even with ``include_dashboard=False``): a single node
      that ends with the run has nothing to autoscale, and nothing submits jobs to it or
      asks its state API. Both are Python processes importing their packages while the
      run starts; without them ``ray.init`` took 1.8-3.0 s against 2.9-4.4 s, and a 20 s
      720p identity run reached its first decode 0.6-1.6 s sooner (benchmarks/README,
      session 14). Ray Data asks the state API only from its hanging-task detector, which
      Ray leaves off, and for a detailed stats summary, which raypipe never asks for;
      without the API server such a query waits 40 s before it gives up (tested: the
      detector stays off).
    """
    from ray._private import ray_constants
    from ray._raylet import Config  # type: ignore[attr-defined]

    if ray_auth_mode_from_env() is None:
        os.environ["RAY_AUTH_MODE"] = "token"
        Config.initialize("")
    cluster_mode = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False  # the node's address: the loopback one
    children = _child_pids()
    try:
        with ctrl_c_held(), _head_processes(log_monitor=verbose):
            _in_a_lasting_thread(
                functools.partial(
                    ray.init,
                    address="local",  # a new local Ray, never a stray `ray start` cluster
                    num_cpus=local_cpus(runtime),
                    num_gpus=runtime.local_num_gpus,
                    object_store_memory=runtime.local_object_store_bytes,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    log_to_driver=verbose,
                    _system_config=local_ray_config(),  # ray.init adds its own keys to it
                )
            )
    except BaseException:
        _stop_new_processes(children)
        raise
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_mode
    global _local_ray
    _local_ray = (ray.get_runtime_context().gcs_address, runtime.local_object_store_bytes)


def _in_a_lasting_thread(start: Callable[[], object]) -> None:
    """Call ``start`` (``ray.init`` of a new local Ray) here on the main thread; from any
    other, on a thread that lives as long as the process. Ray's GCS and raylet are started
    to end with the thread that started them (Linux's parent-death signal is the thread's):
    a notebook's first run from a worker thread (a thread pool's) left a Ray whose GCS died
    with that thread, and the next run waited 60 s for it, then Ray ended the process."""
    if threading.current_thread() is threading.main_thread():
        start()
        return
    done, outcome = threading.Event(), []

    def keeper() -> None:
        try:
            start()
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            outcome.append(e)
        done.set()
        threading.Event().wait()  # Ray's processes live while this thread does: forever

    threading.Thread(target=keeper, name="raypipe-local-ray", daemon=True).start()
    done.wait()
    if outcome:
        raise outcome[0]


def _child_pids() -> set[int]:
    """The pids of this process's descendants now."""
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def _stop_new_processes(before: set[int]) -> None:
    """Stop a local Ray whose start was cut short (Ctrl-C, SIGTERM, a failure): Ray's
    shutdown for what it knows of, then SIGKILL for every descendant of this process not
    in ``before``, without waiting for them to go (nothing of a Ray that never ran needs a
    graceful end; its GCS and raylet took more than 3 s to go on SIGTERM). Cut short inside
    the node's own start, Ray had no handle on its processes yet: the raylet and GCS ended
    with this process, and the agents and worker processes they had started ran on,
    orphaned, for a minute or more."""
    import psutil

    with contextlib.suppress(Exception):  # half a Ray: whatever it says, the kills follow
        ray.shutdown()
    for process in psutil.Process().children(recursive=True):
        if process.pid not in before:
            with contextlib.suppress(psutil.Error):
                process.kill()


LOCAL_WORKERS_CONFIG: dict[str, bool] = {"enable_worker_prestart": True}
"""The local raylet starts its first worker processes as it starts, not when the driver
has connected (Ray's default for a driver's first job): they import
:data:`PRELOADED_MODULES` while the agents start and ``ray.init`` waits for them, when
one of the 2 cores was idle, and the actors take them as they would the driver's. As
many as Ray would start for the driver (its startup concurrency, the node's cores). A
20 s 720p ``sharpen`` run's first decode came 3.25 s (3.20-3.31) after the command
against 3.62 s (3.54-3.71), its wall 15.14 against 15.44 s (medians of 4 alternated
rounds; benchmarks/README.md, session 42). A cluster's nodes
start theirs when a job comes, as Ray starts them."""


def local_ray_config() -> dict[str, bool | int | list[str]]:
    """The system config of raypipe's local Ray: :data:`RAYLET_CONFIG`,
    :data:`LOCAL_WORKERS_CONFIG` and the workers' :data:`PRELOADED_MODULES` (a list: Ray's
    config reads that key as an array)."""
    return {
        **RAYLET_CONFIG,
        **LOCAL_WORKERS_CONFIG,
        "preload_python_modules": list(PRELOADED_MODULES),
    }


def local_cpus(runtime: RuntimeConfig) -> int:
    """Logical CPUs of the local Ray: ``local_num_cpus``, else twice the cores, at least 4."""
    return runtime.local_num_cpus or max(4, 2 * (os.cpu_count() or 1))


STORE_FLOOR_BYTES = 1 << 30
"""The smallest object store :func:`local_store_bytes` gives (1 GiB): small videos' chunks
are a few MB, and a later run in the same process may bring larger ones."""

_local_ray: tuple[str, int | None] | None = None
"""The GCS address of the last local Ray :func:`start_local` started, and the object store
size it gave it (``None``: Ray's default)."""


def local_store_bytes(chunk_bytes: int, runtime: RuntimeConfig) -> int:
    """The object store of a local Ray whose run holds chunks of at most ``chunk_bytes``
    each (a chunk's decoded RGB frames plus the model's output for them): one chunk for
    each logical CPU (decode and encode tasks hold one each), two for each inference actor
    (two calls in flight) and two queued; at least :data:`STORE_FLOOR_BYTES`, at most
    Ray's own default (30% of the available memory, capped by ``/dev/shm``).

    Why not Ray's default: the store's pages are shared memory that every process maps,
    and a store much larger than a run's chunks kept handing out pages the processes had
    not touched yet. On a 2-core 24 GB VM a 60 s 720p run's page faults fell 1.7x and its
    system CPU 1.5-2x with this size (2.65 GB) against Ray's 7.5 GB; its wall did not
    move (benchmarks/store.py; benchmarks/README.md, session 25)."""
    return min(max(_store_need(chunk_bytes, runtime), STORE_FLOOR_BYTES), ray_default_store_bytes())


def _store_need(chunk_bytes: int, runtime: RuntimeConfig) -> int:
    return (local_cpus(runtime) + 2 * (runtime.workers or 1) + 2) * chunk_bytes


def ray_default_store_bytes() -> int:
    """The object store Ray gives a node started on this machine now, without a size."""
    from ray._private import utils

    return utils.resolve_object_store_memory(utils.estimate_available_memory())


def sized_local_store() -> int | None:
    """The object store size :func:`start_local` gave the Ray this process is connected to,
    or None when that Ray is not one it started with a size."""
    return _local_ray[1] if _local_ray is not None and on_local_ray() else None


def on_local_ray() -> bool:
    """Whether the Ray this process is connected to is one :func:`start_local` started: a
    single node that ends with the process, which nothing else joins."""
    if _local_ray is None or not ray.is_initialized():
        return False
    return ray.get_runtime_context().gcs_address == _local_ray[0]


def on_one_node_here() -> bool:
    """Whether the Ray this process is connected to is a single node on this machine: Ray
    raypipe started (:func:`on_local_ray`), or one the driver joined whose only live node
    is the driver's own (a workstation's ``ray start --head``, a notebook's
    ``ray.init()``, a job on a one-machine cluster). A Ray Client driver, which has no node
    of its own, never is; nor a cluster of two nodes or more."""
    if on_local_ray():
        return True
    if not ray.is_initialized():
        return False
    try:
        from ray.util.client import ray as client

        if client.is_connected():  # the context would name a node of the cluster's
            return False
        here = ray.get_runtime_context().get_node_id()
        alive = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    except Exception:  # noqa: BLE001 - a client connection, an older Ray: not known here
        return False
    return alive == [here]


def store_too_small(size: int, chunk_bytes: int, runtime: RuntimeConfig) -> str | None:
    """A warning when a local Ray's store of ``size`` bytes is smaller than a run with
    chunks of ``chunk_bytes`` wants (:func:`local_store_bytes`, without its floor), else
    None: the run works, but spills chunks to disk."""
    need = min(_store_need(chunk_bytes, runtime), ray_default_store_bytes())
    if need <= size:
        return None
    return (
        f"the local Ray this process started has a {size / 2**30:.1f} GiB object store; "
        f"this video's chunks want {need / 2**30:.1f} GiB and some will spill to disk "
        "(slower). ray.shutdown() before this run starts a Ray sized for it"
    )


@contextmanager
def _head_processes(*, log_monitor: bool) -> Iterator[None]:
    """A local Ray started meanwhile starts the head's GCS and raylet, a log monitor only
    if ``log_monitor``, and neither the autoscaler monitor nor the API server
    (:func:`start_local` says why). ``ray.init`` has no options for them (``ray start``
    has ``--include-log-monitor`` and ``--no-monitor``); the head node starts each through
    a method of ``Node``, which this replaces with one that does nothing while Ray starts.
    Ray's own multi-node test clusters run nodes without a log monitor too. The node's
    dashboard agent runs in Ray's minimal mode (:data:`_DASHBOARD_CHECK`)."""
    import ray._private.utils as ray_utils
    from ray._private.node import Node

    def nothing(self: Node, *_: object, **__: object) -> None:
        return None

    skipped = [n for n in _SKIPPED_HEAD_PROCESSES if n != "start_log_monitor" or not log_monitor]
    replaced = [(Node, name, nothing) for name in skipped]
    replaced.append((ray_utils, _DASHBOARD_CHECK, _minimal_agent))
    # a Ray without one of these starts that process (or chooses) some other way: left as it is
    replaced = [(owner, name, new) for owner, name, new in replaced if hasattr(owner, name)]
    kept = [(owner, name, getattr(owner, name)) for owner, name, _ in replaced]
    for owner, name, new in replaced:
        setattr(owner, name, new)
    try:
        yield
    finally:
        for owner, name, old in kept:
            setattr(owner, name, old)


_DASHBOARD_CHECK = "get_dashboard_dependency_error"
"""Ray's test for ``ray[default]``'s packages, which a node's start asks to choose the
dashboard agent's mode: the full agent where they import, the ``--minimal`` one (no HTTP
server: nothing to submit jobs to) where they do not. It imports them to know (aiohttp,
OpenTelemetry's Prometheus exporter, pydantic...: 0.22 s of a driver's imports, the
longest one it makes, with ``-X importtime`` on 2 vCPUs), on the critical path of
``ray.init``. raypipe's local Ray has no dashboard and nothing that submits jobs to it, so
:func:`_head_processes` answers as a minimal ``pip install raypipe`` (``ray[data]``, not
``ray[default]``) does: the agent is the same with or without ``ray[default]``, and the
workers find no metrics agent to export to (nothing could scrape it on a Ray that ends
with the run; a running cluster's nodes export as before). 20 s 720p ``sharpen``, 4
alternated rounds: first decode 3.05 s (2.97-3.07) after the command against 3.27
(3.18-3.38), wall 14.32 against 14.72 s (benchmarks/README.md, session 43)."""


def _minimal_agent() -> ImportError:
    """Ray's dashboard dependency check, answered without importing them (see
    :data:`_DASHBOARD_CHECK`)."""
    return ImportError("raypipe's local Ray has no dashboard: its agent runs --minimal")


_SKIPPED_HEAD_PROCESSES = ("start_log_monitor", "start_monitor", "start_api_server")


@dataclass(frozen=True)
class ActorPlan:
    """How many inference actors, and what each reserves."""

    workers: int
    num_gpus: float  # per actor: 1/k with k workers per GPU
    num_cpus: float
    intra_op_threads: int
    fused: bool = False  # each actor decodes, runs and encodes (raypipe.distributed.fused)

    @property
    def uses_gpu(self) -> bool:
        return self.num_gpus > 0


def fuse_stages(plan: ActorPlan, runtime: RuntimeConfig) -> ActorPlan:
    """``plan`` with the chunk's stages fused into its actors (``runtime.stages``: ``fused``,
    or ``auto`` for actors on the CPU), else as it is. Fused CPU actors are one per two of
    the cluster's CPUs (two per ``actor_num_cpus`` above 1) unless ``runtime.workers``
    says: each decodes with :data:`~raypipe.distributed.fused.FUSED_THREADS` threads, and
    the other CPU slots are left to the plan and assembly tasks (raypipe's local Ray counts
    twice the cores)."""
    if runtime.stages == "split" or (runtime.stages == "auto" and plan.uses_gpu):
        return plan
    workers = plan.workers
    if not plan.uses_gpu and runtime.workers is None:
        cpus = float(ray.cluster_resources().get("CPU", 0))
        workers = max(1, int(cpus / 2 / max(plan.num_cpus, 1.0)))
    return dataclasses.replace(plan, workers=workers, fused=True)


def check_cpus(workers: int, actor_cpus: float, cpus: float, lower: str) -> None:
    """Raise :class:`ClusterError` where ``workers`` actors of ``actor_cpus`` leave the
    cluster's ``cpus`` no CPU for the decode and encode tasks (the run would wait for one
    forever); ``lower`` says what to lower (the options' names where the user gave them)."""
    need = workers * actor_cpus
    if need + 1 > cpus and cpus <= 1:  # no actor fits, whatever is lowered (the advice said to)
        raise ClusterError(
            f"the cluster has {cpus:g} CPU{'' if cpus == 1 else 's'}; a run needs more than 1 "
            "(1 for the decode/encode tasks and a share for its inference actors): add CPUs "
            "(`ray start --num-cpus N`)"
        )
    if need + 1 > cpus:
        raise ClusterError(
            f"{workers} inference actors reserve {need:g} CPUs and the decode/encode tasks "
            f"need at least 1 more, the cluster has {cpus:g}; {lower}, or add CPUs"
        )


def plan_actor_gpus(workers: int | None, num_gpus: float) -> ActorPlan:
    """The pool of :func:`raypipe.data.map_processor` given ``num_gpus`` per actor: as many
    actors as the cluster's GPUs hold (one without GPUs) unless ``workers`` says, checked
    against the cluster as :func:`plan_actors` checks its own (a pool that cannot start
    waited for GPUs or CPUs forever, silently)."""
    if num_gpus < 0:
        raise ConfigError(f"num_gpus must be >= 0, got {num_gpus!r}")
    resources = ray.cluster_resources()
    gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 0))
    if num_gpus > 0 and gpus < num_gpus:
        raise DeviceUnavailableError(
            f"num_gpus={num_gpus:g} per actor asked for but the Ray cluster has "
            f"{gpus:g} GPUs; pass num_gpus=0 to run on the CPU"
        )
    count = workers or (max(1, int(gpus / num_gpus)) if num_gpus > 0 else 1)
    if count * num_gpus > gpus + 1e-9:
        raise ClusterError(
            f"{count} actors at num_gpus={num_gpus:g} need {count * num_gpus:g} GPUs, the "
            f"cluster has {gpus:g}; pass workers={max(1, int(gpus / num_gpus))} or fewer, "
            "or a smaller num_gpus"
        )
    check_cpus(count, 1.0, cpus, "pass fewer workers=")
    return ActorPlan(workers=count, num_gpus=float(num_gpus), num_cpus=1.0, intra_op_threads=1)


def _warn_gpu_only(runtime: RuntimeConfig, model: ModelConfig) -> None:
    """One line naming the GPU-only options a run on the CPU was given: they changed
    nothing, and were left unused without a word (a sweep). (``--precision fp16`` has
    its own line: :func:`raypipe.distributed.setup.precision_note`.)"""
    given = [
        (option, python)
        for option, python, used in (
            ("--workers-per-gpu", "workers_per_gpu=", runtime.workers_per_gpu != 1),
            ("--engine-cache", "engine_cache=", model.engine_cache is not None),
        )
        if used
    ]
    if given:
        why = "--device cpu" if model.device == "cpu" else "the Ray cluster has no GPUs"
        log.warning(
            "%s (%s in Python): not used, the run is on the CPU (%s); %s GPU actors only",
            " and ".join(option for option, _ in given),
            ", ".join(python for _, python in given),
            why,
            "they apply to" if len(given) > 1 else "it applies to",
        )


def plan_actors(runtime: RuntimeConfig, model: ModelConfig) -> ActorPlan:
    """Size the actor pool from the cluster's resources; fail early when it cannot run."""
    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0))
    cpus = float(resources.get("CPU", 0))
    if model.device == "gpu" and gpus < 1:
        raise DeviceUnavailableError(
            "device 'gpu' asked for but the Ray cluster has no GPU resources; start Ray "
            "nodes with GPUs (`ray start --num-gpus N`) or pass --device cpu (device='cpu' in "
            "Python)"
        )
    use_gpu = model.device != "cpu" and gpus >= 1
    if not use_gpu:
        _warn_gpu_only(runtime, model)
    per_gpu = runtime.workers_per_gpu if use_gpu else 1
    slots = int(gpus) * per_gpu
    workers = runtime.workers or (slots if use_gpu else 1)
    if use_gpu and workers > slots:
        raise ClusterError(
            f"{workers} workers at {per_gpu} per GPU asked for, the cluster has {gpus:g} GPUs "
            f"({slots} slots); pass --workers {slots} or fewer, or raise --workers-per-gpu "
            "(workers=, workers_per_gpu= in Python)"
        )
    lower = "lower --workers or --actor-cpus (workers=, actor_num_cpus= in Python)"
    check_cpus(workers, runtime.actor_num_cpus, cpus, lower)
    return ActorPlan(
        workers=workers,
        num_gpus=1.0 / per_gpu if use_gpu else 0.0,
        num_cpus=runtime.actor_num_cpus,
        intra_op_threads=max(1, int(runtime.actor_num_cpus)),
    )
