"""The local Ray raypipe starts for a run: it frees dead objects quickly (the cluster image
too), has no log monitor, autoscaler monitor or API server."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

ray = pytest.importorskip("ray")

from raypipe.config import RuntimeConfig  # noqa: E402
from raypipe.distributed.cluster import (  # noqa: E402
    LOCAL_WORKERS_CONFIG,
    PRELOADED_MODULES,
    RAYLET_CONFIG,
    connect,
)
from raypipe.testing import ClipSpec, make_clip  # noqa: E402

DOCKERFILE = Path(__file__).resolve().parents[2] / "cluster" / "Dockerfile"


def _sigterm_of_this_process(signum: int, frame: object) -> None:
    raise AssertionError("a stand-in: never called")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """The local Ray raypipe starts for a run (not verbose), started while this process has
    a SIGTERM handler of its own (as the ``raypipe`` command has)."""
    if ray.is_initialized():
        ray.shutdown()
    before = signal.signal(signal.SIGTERM, _sigterm_of_this_process)
    try:
        assert connect(RuntimeConfig(local_num_cpus=2)) is True
        yield
        ray.shutdown()
    finally:
        signal.signal(signal.SIGTERM, before)


def test_the_processs_own_sigterm_handler_outlives_ray_init(local_ray: None) -> None:
    """``ray.init`` sets Ray's (``sys.exit(15)``); raypipe puts the process's back."""
    assert signal.getsignal(signal.SIGTERM) is _sigterm_of_this_process


def test_an_address_of_another_cluster_is_refused_once_connected(local_ray: None) -> None:
    """A notebook's second run with ``address=`` of a cluster ran on the local Ray its
    first run had started, without a word (a sweep); the same cluster, however it is
    spelled (Ray names 127.0.0.1 by the node's IP), and ``auto`` are this one."""
    from raypipe.errors import ConfigError

    gcs = ray.get_runtime_context().gcs_address
    port = gcs.rsplit(":", 1)[1]
    for same in (None, "auto", gcs, f"127.0.0.1:{port}", f"localhost:{port}"):
        assert connect(RuntimeConfig(address=same)) is False
    for other in ("10.255.255.1:6379", f"127.0.0.1:{int(port) + 1}"):
        with pytest.raises(ConfigError, match=rf"^Ray is already connected to {gcs} in this "
                           rf"process, so address='{other}' would not be used; call "
                           r"ray.shutdown\(\) first"):  # fmt: skip
            connect(RuntimeConfig(address=other))


def test_the_local_ray_gets_raypipes_raylet_config(local_ray: None) -> None:
    # The system config the local raylet was started with (Ray keeps it on the node).
    config = ray._private.worker._global_node._config
    for key, value in {**RAYLET_CONFIG, **LOCAL_WORKERS_CONFIG}.items():
        assert config.get(key) == value, key


def test_the_local_ray_s_workers_import_ray_data_and_the_stages_before_any_task(
    local_ray: None,
) -> None:
    """A task that needs neither finds both already imported: the worker preloaded them as
    it started (a worker of a Ray without the preload imports them at its first Ray Data
    task)."""

    def imported() -> list[bool]:
        import sys

        return [name in sys.modules for name in PRELOADED_MODULES]

    assert ray.get(ray.remote(num_cpus=1)(imported).remote()) == [True, True]


def test_the_local_ray_has_no_log_monitor(local_ray: None) -> None:
    """Nothing reads the workers' lines from it (``log_to_driver=False``); the files stay."""
    from ray._private import ray_constants

    node = ray._private.worker._global_node
    assert ray_constants.PROCESS_TYPE_RAYLET in node.all_processes  # the table is the one
    assert ray_constants.PROCESS_TYPE_LOG_MONITOR not in node.all_processes
    mine = psutil.Process().children(recursive=True)
    assert not [p for p in mine if "log_monitor" in " ".join(p.cmdline())]
    assert ray.get(ray.remote(lambda: print("a worker line") or 1).remote()) == 1
    logs = Path(node.get_session_dir_path()) / "logs"
    deadline = time.monotonic() + 30
    while not any(
        "a worker line" in f.read_text(errors="replace") for f in logs.glob("worker-*.out")
    ):
        assert time.monotonic() < deadline, "the worker's line is in none of its log files"
        time.sleep(0.2)


def test_the_local_ray_has_no_autoscaler_monitor_and_no_api_server(local_ray: None) -> None:
    """A single node that ends with the run: nothing to autoscale, no job submission or
    state API to serve. Ray's methods that start them are Ray's own again afterwards. The
    dashboard agent stays (the raylet waits for it), in Ray's minimal mode whatever is
    installed, as with ``ray[data]`` alone: no HTTP server and no metrics agent, which
    nothing could reach on a Ray that ends with the run; Ray's check for ``ray[default]``
    is its own again afterwards."""
    import ray._private.utils as ray_utils
    from ray._private import ray_constants
    from ray._private.node import Node

    node = ray._private.worker._global_node
    assert ray_constants.PROCESS_TYPE_RAYLET in node.all_processes
    assert ray_constants.PROCESS_TYPE_MONITOR not in node.all_processes
    assert ray_constants.PROCESS_TYPE_DASHBOARD not in node.all_processes
    lines = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]
    assert not [x for x in lines if "autoscaler/_private/monitor.py" in x], lines
    assert not [x for x in lines if "dashboard/dashboard.py" in x], lines
    agent = ("dashboard/agent.py", "ray::DashboardAgent")  # its command line, then its title
    agents = [x for x in lines if x.startswith(agent[1]) or agent[0] in x]
    assert agents, lines  # it stays
    raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.args
    command = [a for a in raylet if a.startswith("--dashboard_agent_command=")]
    assert len(command) == 1 and "--minimal" in command[0].split(), raylet
    assert ray_utils.get_dashboard_dependency_error.__module__ == "ray._private.utils"
    for name in ("start_log_monitor", "start_monitor", "start_api_server"):
        assert getattr(Node, name).__qualname__ == f"Node.{name}", name


def test_ray_data_does_not_ask_the_missing_state_api() -> None:
    """Ray Data's hanging-task detector queries the state API, which the API server serves;
    without it a query waits 40 s. Ray leaves that detector off ("enable once it's
    non-blocking"); should a Ray upgrade turn it on, this fails first."""
    hanging = pytest.importorskip(  # Ray Data without it has no such detector to turn on
        "ray.data._internal.issue_detection.detectors.hanging_detector"
    )
    detectors = ray.data.DataContext.get_current().issue_detectors_config.detectors
    assert hanging.HangingExecutionIssueDetector not in detectors, detectors


def test_the_cluster_image_sets_the_same_raylet_config() -> None:
    """Cluster nodes read it from RAY_<name> in the environment of `ray start`."""
    env = dict(re.findall(r"^ENV RAY_(\w+)=(\S+)$", DOCKERFILE.read_text(), re.M))
    assert {k: int(v) for k, v in env.items() if k in RAYLET_CONFIG} == RAYLET_CONFIG


def test_verbose_keeps_the_log_monitor_and_shows_workers_lines(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """``--verbose`` leaves Ray's forwarding alone: a worker's print reaches the driver."""
    from ray._private import ray_constants

    if ray.is_initialized():
        ray.shutdown()
    try:
        assert connect(RuntimeConfig(local_num_cpus=2), verbose=True) is True
        node = ray._private.worker._global_node
        assert ray_constants.PROCESS_TYPE_LOG_MONITOR in node.all_processes
        ray.get(ray.remote(lambda: print("a line from a worker")).remote())
        deadline = time.monotonic() + 30
        seen = ""
        while "a line from a worker" not in seen and time.monotonic() < deadline:
            time.sleep(0.2)
            seen += capfd.readouterr().out
        assert "a line from a worker" in seen
    finally:
        ray.shutdown()


@pytest.mark.parametrize("verbose", [False, True])
def test_the_command_ends_ray_itself_unless_workers_lines_come_to_the_driver(
    verbose: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``end_for_exit`` (the command's last step before the process ends) shuts Ray down
    at once when the driver takes no worker lines; with ``verbose`` it leaves Ray to its
    ``atexit`` handler, whose 0.5 s wait lets the last forwarded lines print."""
    from raypipe.distributed.cluster import end_for_exit

    if ray.is_initialized():
        ray.shutdown()
    sleeps: list[float] = []
    real_sleep = time.sleep
    try:
        assert connect(RuntimeConfig(local_num_cpus=2), verbose=verbose) is True
        assert ray.get(ray.remote(lambda: 1).remote()) == 1
        monkeypatch.setattr(time, "sleep", lambda s: sleeps.append(s) or real_sleep(s))
        end_for_exit()
        assert ray.is_initialized() is verbose
        assert 0.5 not in sleeps, sleeps  # not the exit handler's wait
    finally:
        monkeypatch.undo()
        ray.shutdown()


INTERRUPTED_START = """
import os, signal, sys
from ray._private.node import Node
from raypipe.config import RuntimeConfig
from raypipe.distributed import cluster
from raypipe.exiting import Terminated, raise_on_sigterm

raise_on_sigterm()  # as the command does
started = Node.start_ray_processes


def then_sigterm(self, *args, **kwargs):  # the raylet is up, its agents are starting
    started(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)


Node.start_ray_processes = then_sigterm
try:
    cluster.connect(RuntimeConfig(local_num_cpus=2))
except Terminated:
    sys.exit(143)
"""


_FROM_A_THREAD = """
import concurrent.futures, time, ray
from raypipe.config import RuntimeConfig
from raypipe.distributed.cluster import connect
with concurrent.futures.ThreadPoolExecutor(1) as pool:
    assert pool.submit(connect, RuntimeConfig(local_num_cpus=2)).result() is True
time.sleep(2)  # the thread that started Ray is gone
print(ray.get(ray.remote(lambda: 41 + 1).remote(), timeout=60), flush=True)
"""


def test_a_local_ray_started_from_a_thread_outlives_it() -> None:
    """A notebook's first run from a thread pool's thread started the local Ray there; its
    GCS and raylet died with that thread (Linux's parent-death signal is the thread's),
    and the next run waited 60 s for the GCS, then Ray ended the kernel (a sweep)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-c", _FROM_A_THREAD], capture_output=True, text=True, timeout=120,
        env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout == "42\n", done.stderr[-3000:]


def test_a_local_ray_start_cut_short_leaves_no_ray_process_running(tmp_path: Path) -> None:
    """SIGTERM (or Ctrl-C) while ``ray.init`` starts the node, before Ray holds its
    processes: raypipe's command ends as for SIGTERM anywhere (Ray's handler took it: its
    ``SystemExit(15)`` goes to the command's), and what the start had started goes with
    it. Before, the raylet and GCS died with the process and the agents they had started
    ran on for a minute or more."""
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="rpcut", dir="/tmp")  # short: Ray's socket paths
    try:
        env = {**os.environ, "RAY_TMPDIR": ray_tmp}
        done = subprocess.run([sys.executable, "-c", INTERRUPTED_START], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 143, done.stderr[-3000:]

        def left() -> list[str]:
            found = []
            for process in psutil.process_iter(["cmdline"]):
                cmdline = " ".join(process.info["cmdline"] or [])
                if ray_tmp in cmdline and process.status() != psutil.STATUS_ZOMBIE:
                    found.append(cmdline[:120])
            return found

        deadline = time.monotonic() + 15
        while left():
            assert time.monotonic() < deadline, left()
            time.sleep(0.5)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


CTRL_C_IN_INIT = """
import os, signal, sys
import ray
from raypipe.config import RuntimeConfig
from raypipe.distributed import cluster

made = ray._raylet.CoreWorker


def then_ctrl_c(*args, **kwargs):  # the driver's core worker is made, not yet Python's
    worker = made(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGINT)
    return worker


ray._raylet.CoreWorker = then_ctrl_c
try:
    cluster.connect(RuntimeConfig(local_num_cpus=2))
    print("no interrupt")
    sys.exit(2)
except KeyboardInterrupt:
    print("interrupted; connected:", ray.is_initialized(), flush=True)
ray._raylet.CoreWorker = made
cluster.connect(RuntimeConfig(local_num_cpus=2))  # a notebook's next cell
print("answer", ray.get(ray.remote(lambda: 42).remote()), flush=True)
cluster.connect(RuntimeConfig(local_num_cpus=2, local_num_gpus=0))  # what it has: taken
try:  # another size: it was dropped without a word (a sweep)
    cluster.connect(RuntimeConfig(local_num_cpus=5))
    print("not refused")
except ValueError as e:
    print(type(e).__name__, e, flush=True)
ray.shutdown()
"""


def test_ctrl_c_inside_ray_init_is_taken_after_it_and_ray_starts_again(tmp_path: Path) -> None:
    """Ctrl-C that came as ``ray.init`` made the driver's core worker left it made in C++
    but unknown to Python: ``ray.shutdown()`` could not end it, and the next start in the
    process (a notebook's next cell) aborted the interpreter ("The process is already
    initialized for core worker"), killing the kernel. Ctrl-C is held until ``ray.init``
    returns (raypipe.exiting.ctrl_c_held), then taken: the local Ray goes whole, and the
    next start works."""
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="rpint", dir="/tmp")  # short: Ray's socket paths
    try:
        env = {**os.environ, "RAY_TMPDIR": ray_tmp}
        done = subprocess.run([sys.executable, "-c", CTRL_C_IN_INIT], env=env,
                              capture_output=True, text=True, timeout=180)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        assert done.stdout.splitlines() == [
            "interrupted; connected: False",
            "answer 42",
            "ConfigError local_num_cpus=5 sizes the local Ray raypipe starts, but Ray is "
            "already running in this process with 2 CPUs, so it would not be used; call "
            "ray.shutdown() first, or leave local_num_cpus out",
        ]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


RUNS_IN_THREADS = """
import sys
from concurrent.futures import ThreadPoolExecutor

import ray
import raypipe

def run(i):
    return raypipe.process_video(f"in{i}.mp4", f"out{i}.mp4", model="builtin:invert",
                                 quiet=True).frames

with ThreadPoolExecutor(2) as pool:
    print(list(pool.map(run, [1, 2])))
print(ray.get_runtime_context().gcs_address.rsplit(":", 1)[0])
"""


def test_runs_started_from_two_threads_at_once_share_one_local_ray(tmp_path: Path) -> None:
    """A notebook's thread pool: each run started a local Ray, the one that lost the race
    stopped the other's processes and failed ("ray.init twice"; "a busy machine: try
    again"), and the other's next call had Ray start a default one, beyond the loopback
    (a sweep). One connects at a time: the second finds the first's Ray."""
    import tempfile

    for i in (1, 2):
        make_clip(tmp_path / f"in{i}.mp4", ClipSpec(n_frames=12, width=96, height=64))
    ray_tmp = tempfile.mkdtemp(prefix="rpthr", dir="/tmp")  # short: Ray's socket paths
    try:
        env = {**os.environ, "RAY_TMPDIR": ray_tmp}
        done = subprocess.run([sys.executable, "-c", RUNS_IN_THREADS], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=240)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        assert done.stdout.splitlines() == ["[12, 12]", "127.0.0.1"], done.stdout
        sessions = [p for p in Path(ray_tmp, "ray").iterdir() if p.name.startswith("session_2")]
        assert len(sessions) == 1, sessions  # one Ray, not one a run
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_an_address_where_another_server_listens_is_refused_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The dashboard's port given as --address (cluster/README shows
    http://127.0.0.1:8265): ``ray.init`` retried without end, printing Ray's lines every
    40 s. And cluster/README's ``export RAY_ADDRESS=http://...`` for ``ray job submit``
    made every run fail advising on --address forms, naming no variable (a sweep)."""
    import http.server
    import threading

    from raypipe.config import RuntimeConfig
    from raypipe.distributed.cluster import connect
    from raypipe.errors import ClusterError

    if ray.is_initialized():
        ray.shutdown()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    try:
        started = time.monotonic()
        with pytest.raises(ClusterError, match=rf"^'{address}' answers, but not as a Ray .* GCS"):
            connect(RuntimeConfig(address=address))
        assert time.monotonic() - started < 10
        monkeypatch.setenv("RAY_ADDRESS", f"http://{address}")
        with pytest.raises(ClusterError, match=r"^RAY_ADDRESS is 'http://.*', the Jobs API's URL"):
            connect(RuntimeConfig())
    finally:
        server.shutdown()


def test_a_ray_client_address_is_refused_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Ray Data does not work through Ray Client: ``--address ray://HOST:10001``, which the
    help's example and the error messages advised, failed 7 s into the run with an
    AttributeError about ``core_worker`` called unexpected (a sweep). Refused before
    anything starts, as the option, in RAY_ADDRESS, and for a process already on Ray
    Client, saying what works instead."""
    from raypipe.config import RuntimeConfig
    from raypipe.distributed.cluster import connect
    from raypipe.errors import ClusterError, ConfigError

    if ray.is_initialized():
        ray.shutdown()
    why = r"'ray://127\.0\.0\.1:10001' is a Ray Client address, and Ray Data.*`ray job submit"
    with pytest.raises(ConfigError, match="^" + why):
        RuntimeConfig(address="ray://127.0.0.1:10001")
    monkeypatch.setenv("RAY_ADDRESS", "ray://127.0.0.1:10001")
    with pytest.raises(ClusterError, match="^RAY_ADDRESS: " + why):
        connect(RuntimeConfig())
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setattr(ray.util.client.ray, "is_connected", lambda: True)
    with pytest.raises(ClusterError, match="^this process is on Ray Client, and Ray Data"):
        connect(RuntimeConfig())
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "raypipe.cli", "run", "in.mp4", "out.mp4", "--address",
         "ray://127.0.0.1:10001"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    error = "raypipe: error: ConfigError: 'ray://127.0.0.1:10001' is a Ray Client address"
    assert done.stderr.startswith(error), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and time.monotonic() - started < 30
    assert list(tmp_path.iterdir()) == []


def test_a_cluster_of_one_cpu_is_told_to_add_cpus_not_to_lower_options() -> None:
    """On a 1-CPU cluster the advice was to lower --workers or --actor-cpus, neither of
    which can make a run fit (a sweep)."""
    from raypipe.distributed.cluster import check_cpus
    from raypipe.errors import ClusterError

    for actor_cpus in (1.0, 0.5):
        with pytest.raises(
            ClusterError, match=r"^the cluster has 1 CPU; a run needs more than 1 .* add CPUs"
        ):
            check_cpus(1, actor_cpus, 1.0, "lower --workers or --actor-cpus")
    check_cpus(1, 0.5, 1.5, "lower")  # fits
