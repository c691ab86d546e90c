"""`raypipe serve` on a real `ray start --head` (token authentication on), and `raypipe run
--address` handing its runs to it: exact outputs, typed errors, Ctrl-C, `--no-service`, one
service per cluster. The commands are separate processes, as a user runs them."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import assert_exact, lossless_cli_args, running_command, settled_idle_workers
from ray_head import RAY, base_env, free_ports, head_files, start_head, stop_tree

from raypipe.testing import ClipSpec, make_clip

MODEL = "builtin:invert"
RAYPIPE = [sys.executable, "-m", "raypipe.cli"]
SERVE_READY_S = 240
RUN_TIMEOUT_S = 240
MAX_RUNS = 4  # the service starts again after 4 runs: test_the_service_restarts_after_max_runs


@dataclass
class Service:
    address: str
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes]
    head: subprocess.Popen[bytes]

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def settled(self) -> None:
        """Wait until the service is neither starting again nor about to (after --max-runs
        runs it is, for a few seconds, no service at all: another `raypipe serve` could take
        its name). Its current life is the log after the last "serving on"."""
        deadline = time.monotonic() + SERVE_READY_S
        while True:
            life = self.text().rsplit("serving on", 1)[-1]
            ended = len(re.findall(r"run-\d+: (?:done|failed|cancelled)", life))
            if "restarting after" not in life and ended < MAX_RUNS:
                return
            assert self.process.poll() is None, self.text()
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.5)

    def python(self, code: str) -> None:
        """``code`` in a Python process connected to the cluster (after its ``ray.init``);
        it must succeed."""
        connect = f"import ray\nray.init(address={self.address!r}, logging_level='ERROR')\n"
        done = subprocess.run([sys.executable, "-c", connect + code], env=self.env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr

    def run(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*RAYPIPE, "run", *args, "--address", self.address],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )


def start_service(
    address: str, env: dict[str, str], log: Path, deadline: float, *options: str
) -> subprocess.Popen[bytes]:
    """``raypipe serve`` on the cluster at ``address``, its output in ``log``; returned once
    it serves (stopped, and the test failed, if it does not by ``deadline``)."""
    with log.open("wb") as sink:
        serve = subprocess.Popen(
            [*RAYPIPE, "serve", "--address", address, *options],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    while "serving on" not in log.read_text(errors="replace"):
        if serve.poll() is not None or time.monotonic() > deadline:
            stop_tree(serve, signal.SIGINT)
            pytest.fail(f"raypipe serve did not come up: {log.read_text()}")
        time.sleep(0.5)
    return serve


@pytest.fixture(scope="module")
def served() -> Iterator[Service]:
    files = head_files("rpserve-")
    temp_dir = files.temp_dir
    (port,) = free_ports(1)
    env = base_env(files.home)
    env.update(RAY_AUTH_MODE="token", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    client_env = {**env, "RAY_AUTH_TOKEN": files.token}
    options = ["--port", str(port), "--include-dashboard", "false", "--num-cpus", "8",
               "--num-gpus", "0", "--object-store-memory", str(300 * 2**20)]  # fmt: skip
    # Its working directory is the temp dir: where relative outputs went before.
    head_env = {**env, "RAY_AUTH_TOKEN_PATH": str(files.token_file)}
    head, head_log = start_head(files, options, head_env)
    serve_log = temp_dir / "serve.log"
    serve = None
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + SERVE_READY_S
        while subprocess.run([RAY, "status", f"--address={address}"], env=client_env,
                             capture_output=True, check=False).returncode != 0:  # fmt: skip
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head did not come up: {files.tail()}")
            time.sleep(1)
        serve = start_service(address, client_env, serve_log, deadline, "--max-runs", str(MAX_RUNS))
        yield Service(address, client_env, serve_log, serve, head)
    finally:
        if serve is not None:
            stop_tree(serve, signal.SIGINT)
        stop_tree(head)
        head_log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_a_run_is_handed_to_the_service_and_exact(served: Service, tmp_path: Path) -> None:
    make_clip(tmp_path / "in.mp4", ClipSpec(n_frames=48, audio="aac"))
    # Relative paths, from another directory than the service's: made absolute on the way.
    done = served.run("in.mp4", "out.mp4", "--model", MODEL, "--chunk-frames", "12",
                      *lossless_cli_args(), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    pid = served.process.pid
    assert f"raypipe: handed to the raypipe service (pid {pid})" in done.stderr
    assert "48/48 frames (100%)" in done.stderr, "the run's progress reaches the command"
    assert done.stdout.startswith("wrote out.mp4: 48 frames in 4 chunks"), done.stdout
    assert_exact(tmp_path / "in.mp4", tmp_path / "out.mp4", MODEL)
    log = served.text()
    assert re.search(rf"(run-\d+): {tmp_path}/in.mp4 -> {tmp_path}/out.mp4\n.*\1: done", log)


def test_a_run_finds_its_actors_worker_processes_started(served: Service, tmp_path: Path) -> None:
    # After each run (and its warm-up) the service has the raylet start as many worker
    # processes as that run had actors there; the next run's actors take them, rather than
    # each waiting for a new process (raypipe/distributed/prestart.py).
    make_clip(tmp_path / "in.mp4", ClipSpec(n_frames=24))
    idle = settled_idle_workers(served.head.pid, at_least=2)
    stats = tmp_path / "stats.json"
    # two actors: the processes a node starts at once are as many as its cores (two here)
    done = served.run("in.mp4", "out.mp4", "--model", MODEL, "--chunk-frames", "6",
                      "--workers", "2", "--stats", str(stats), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    actors = {c["infer_pid"] for c in json.loads(stats.read_text())["chunks"]}
    assert actors and actors <= idle, (actors, idle)


def test_a_failed_run_prints_its_typed_error_and_writes_nothing(
    served: Service, tmp_path: Path
) -> None:
    (tmp_path / "in.mp4").write_bytes(b"not a video")
    failed = served.run("in.mp4", "out.mp4", "-q", cwd=tmp_path)
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raypipe: error: CorruptVideoError: "), lines
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("token", ["none", "wrong"])
def test_a_run_without_the_clusters_token_says_what_to_set_at_once(
    served: Service, tmp_path: Path, token: str
) -> None:
    """`ray.init` retried for 20 s, printing one of Ray's lines each second, then said it
    could not connect and to check the address."""
    env = {k: v for k, v in served.env.items() if not k.startswith("RAY_AUTH")}
    if token == "wrong":
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64)
    started = time.monotonic()
    failed = subprocess.run(
        [*RAYPIPE, "run", "in.mp4", "out.mp4", "--address", served.address, "-q"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    assert failed.returncode == 1 and time.monotonic() - started < 15, failed.stderr
    lines = failed.stderr.strip().splitlines()
    said = "asks for a token" if token == "none" else "refuses this process's token"
    assert len(lines) == 1 and said in lines[0] and "RAY_AUTH_TOKEN_PATH" in lines[0], lines
    assert lines[0].startswith("raypipe: error: ClusterError: the Ray cluster at ")


def test_the_token_check_needs_nothing_beyond_raypipes_own_dependencies() -> None:
    """The check above calls the GCS through gRPC, and skipped itself where ``grpc`` did not
    import: with README's ``pip install -e ".[cpu]"`` (``ray[data]``, no grpcio) the run
    retried for 20 s and blamed the address (a sweep). grpcio is one of raypipe's own
    requirements now, not only the test extras' (``ray[default]``)."""
    import importlib.metadata

    from packaging.requirements import Requirement

    own = [Requirement(r) for r in importlib.metadata.requires("raypipe") or []]
    assert [r.name for r in own if r.name == "grpcio" and r.marker is None] == ["grpcio"]
    import grpc  # noqa: F401 - what the check imports
    from ray.core.generated import gcs_service_pb2_grpc  # noqa: F401


def _sighup_default() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.mark.parametrize(
    "sent,status,said",
    [
        (signal.SIGINT, 130, "raypipe: interrupted"),
        (signal.SIGTERM, 143, "raypipe: terminated (SIGTERM)"),
        # the terminal closed: the command ended at once, the run went on in the service
        (signal.SIGHUP, 129, "raypipe: terminated (SIGHUP)"),
    ],  # fmt: skip
    ids=["ctrl-c", "sigterm", "sighup"],
)
def test_ctrl_c_or_sigterm_cancels_the_run_and_the_service_goes_on(
    served: Service, tmp_path: Path, sent: signal.Signals, status: int, said: str
) -> None:
    """Ctrl-C, SIGTERM (``kill``, ``ray job stop``) or SIGHUP (a closed terminal) on the
    command cancels its run."""
    cancelled_before = len(re.findall(r"run-\d+: cancelled", served.text()))
    make_clip(tmp_path / "long.mp4", ClipSpec(n_frames=600, width=320, height=240))
    command = [*RAYPIPE, "run", "long.mp4", "out.mp4", "--address", served.address,
               "--model", "builtin:sharpen", "--chunk-frames", "24"]  # fmt: skip
    # a terminal's command has SIGHUP at its default; under `nohup` (a CI's runner, say)
    # it is ignored, and the command keeps it ignored, as it should
    client, seen = running_command(command, cwd=tmp_path, env=served.env,
                                   preexec_fn=_sighup_default)  # fmt: skip
    client.send_signal(sent)
    _, rest = client.communicate(timeout=RUN_TIMEOUT_S)
    assert client.returncode == status, seen + rest
    assert rest.strip().splitlines()[-1] == said
    assert not (tmp_path / "out.mp4").exists()
    deadline = time.monotonic() + 30  # the service logs it as its run_one returns
    while len(re.findall(r"run-\d+: cancelled", served.text())) == cancelled_before:
        assert time.monotonic() < deadline, served.text()
        time.sleep(0.2)
    # The service is still there, and its next run is whole.
    make_clip(tmp_path / "in.mp4", ClipSpec(n_frames=24))
    after = served.run("in.mp4", "after.mp4", "--model", MODEL, "-q", *lossless_cli_args(),
                       cwd=tmp_path)  # fmt: skip
    assert after.returncode == 0, after.stderr
    assert_exact(tmp_path / "in.mp4", tmp_path / "after.mp4", MODEL)


def test_a_killed_commands_run_is_cancelled_by_the_service(served: Service, tmp_path: Path) -> None:
    """A command killed with SIGKILL cannot cancel its run: the service cancels it once the
    command has asked for no news for ``ABANDONED_S`` seconds. (Before, the run went on to
    the end and wrote its output, with nobody waiting, and later runs queued behind it.)"""
    from raypipe.distributed.service import ABANDONED_S

    served.settled()
    make_clip(tmp_path / "long.mp4", ClipSpec(n_frames=240, width=64, height=48))
    # a simulated model that holds each frame 1 s without CPU: a minute or more
    command = [*RAYPIPE, "run", "long.mp4", "out.mp4", "--address", served.address,
               "--model", "sim:hold_ms=1000", "--batch-size", "1",
               "--chunk-frames", "8"]  # fmt: skip
    client, seen = running_command(command, cwd=tmp_path, env=served.env)
    killed = time.monotonic()
    client.kill()
    client.communicate(timeout=30)
    deadline = killed + ABANDONED_S + 30
    while not re.search(r"run-\d+: cancelled: its command stopped following it", served.text()):
        assert time.monotonic() < deadline, served.text()
        time.sleep(0.5)
    assert time.monotonic() - killed >= ABANDONED_S - 1, "not before the command's silence"
    assert not (tmp_path / "out.mp4").exists(), seen


def test_no_service_runs_the_video_in_the_command(served: Service, tmp_path: Path) -> None:
    make_clip(tmp_path / "in.mp4", ClipSpec(n_frames=24))
    runs_before = served.text().count(" -> ")
    done = served.run("in.mp4", "out.mp4", "--model", MODEL, "--no-service",
                      *lossless_cli_args(), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "handed to the raypipe service" not in done.stderr
    assert served.text().count(" -> ") == runs_before
    assert_exact(tmp_path / "in.mp4", tmp_path / "out.mp4", MODEL)


def test_the_service_restarts_after_max_runs(served: Service, tmp_path: Path) -> None:
    """After --max-runs runs it serves what is queued, takes no new run (commands run their
    videos themselves meanwhile) and starts again as a new process in its place (the same
    pid), warmed up; then it takes runs again. Runs before this test: 7 handed over (the
    exact run, the one that finds its processes started, the failed one, and twice a
    cancelled one and the one after it), so it started again after the 4th; this test's
    run is the 4th of its second life, so it starts again after it too: the test waits
    for that to end (the tests after it need the one service)."""
    make_clip(tmp_path / "in.mp4", ClipSpec(n_frames=24))
    deadline = time.monotonic() + SERVE_READY_S
    while served.text().count("serving on") < 2:  # the restart began after the 4th run
        assert served.process.poll() is None, served.text()
        assert time.monotonic() < deadline, served.text()
        time.sleep(0.5)
    assert f"restarting after {MAX_RUNS} runs" in served.text()
    after = served.run("in.mp4", "out.mp4", "--model", MODEL, *lossless_cli_args(),
                       cwd=tmp_path)  # fmt: skip
    assert after.returncode == 0, after.stderr
    assert f"handed to the raypipe service (pid {served.process.pid})" in after.stderr
    assert_exact(tmp_path / "in.mp4", tmp_path / "out.mp4", MODEL)
    served.settled()


def test_one_service_per_cluster(served: Service) -> None:
    served.settled()
    second = subprocess.run(
        [*RAYPIPE, "serve", "--address", served.address],
        env=served.env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert second.returncode == 1
    assert (
        second.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"raypipe: error: ClusterError: a raypipe service already runs on this cluster (pid "
            f"{served.process.pid} on "
        )
    ), second.stderr


def test_relative_paths_on_a_running_cluster_land_where_the_command_runs(
    served: Service, tmp_path: Path
) -> None:
    """An archive's tasks run in the cluster's processes, whose working directory is not
    the command's: the driver resolves relative paths first (the outputs landed in the
    directory `ray start` ran in before, with the report saying done)."""
    (tmp_path / "videos").mkdir()
    make_clip(tmp_path / "videos" / "a.mp4", ClipSpec(n_frames=24))
    (tmp_path / "list.txt").write_text("videos/a.mp4\n")
    for inputs, out in (("videos", "out"), ("list.txt", "listed")):
        done = subprocess.run(
            [*RAYPIPE, "archive", inputs, out, "--address", served.address, "--model", MODEL,
             "-q", *lossless_cli_args()],
            cwd=tmp_path, env=served.env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert_exact(tmp_path / "videos" / "a.mp4", tmp_path / out / "a.mp4", MODEL)


PROCESSOR = """
import raypipe


class Inverted(raypipe.Processor):
    def setup(self, ctx):
        self.session = ctx.session("m.onnx")  # relative: the command's working directory

    def __call__(self, frames):
        return 255 - frames
"""


def test_a_processors_relative_model_path_is_the_commands_in_a_served_run(
    served: Service, tmp_path: Path
) -> None:
    """``ctx.session("m.onnx")`` in a processor looks in the folder the run was started
    from: a run handed to the service looked in the service's and failed with
    ModelNotFoundError, where the same command with ``--no-service`` ran (a sweep)."""
    served.settled()
    make_clip(tmp_path / "in.mp4", ClipSpec(n_frames=12))
    (tmp_path / "proc.py").write_text(PROCESSOR)
    export = subprocess.run([*RAYPIPE, "model", "export", "builtin:invert", "m.onnx"],
                            cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert export.returncode == 0, export.stderr
    done = served.run("in.mp4", "out.mp4", "--processor", "proc.py:Inverted",
                      *lossless_cli_args(), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "raypipe: handed to the raypipe service" in done.stderr
    assert_exact(tmp_path / "in.mp4", tmp_path / "out.mp4", MODEL)


def test_sigterm_stops_the_service_in_one_line(served: Service) -> None:
    """It stops the service the tests above share (the test after it starts its own).
    SIGTERM (``kill``, a container's or a pod's stop) stops it as Ctrl-C does, said in one
    line, status 143: the signal comes while the service waits in ``ray.get``, where Ray
    turns what the handler raised into a plain KeyboardInterrupt."""
    served.settled()  # up, waiting for runs
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=60) == 143, served.text()
    assert served.text().rstrip().splitlines()[-1] == "raypipe: terminated (SIGTERM)"


def test_a_service_whose_mailbox_goes_stops_in_one_line(served: Service, tmp_path: Path) -> None:
    """After the test above stopped the shared service: a new one on the same cluster, its
    mailbox actor killed (``ray kill``; as when its worker process dies or its node goes)
    while the service waits for runs. No command can hand a run over any more: the service
    ends with a typed error in one line and status 1 (it said ``ActorDiedError`` as an
    unexpected error before)."""
    log = tmp_path / "serve.log"
    service = start_service(served.address, served.env, log, time.monotonic() + SERVE_READY_S)
    try:
        served.python(
            "from raypipe.distributed.service import NAMESPACE, SERVICE_NAME\n"
            "ray.kill(ray.get_actor(SERVICE_NAME, namespace=NAMESPACE))\n"
        )
        assert service.wait(timeout=60) == 1, log.read_text()
    finally:
        stop_tree(service, signal.SIGINT)
    last = log.read_text(errors="replace").rstrip().splitlines()[-1]
    assert last.startswith(
        "raypipe: error: ClusterError: the raypipe service's mailbox actor on the cluster at "
        f"{served.address} is gone (ActorDiedError: "
    ), last
    assert last.endswith("raypipe serve stops: start it again"), last


def test_a_service_that_does_not_answer_is_not_waited_for(served: Service, tmp_path: Path) -> None:
    """A mailbox named on the cluster whose service goes as the command asks it (here a
    stand-in that dies when asked, as a stopping service's mailbox does): the command says
    so and runs the video itself, exact (it failed with an unexpected ActorDiedError
    before). Runs after the service above is gone."""
    served.python(
        "import os\n"
        "from raypipe.distributed.service import NAMESPACE, SERVICE_NAME\n"
        "@ray.remote(num_cpus=0)\n"
        "class Gone:\n"
        "    def info(self):\n"
        "        os._exit(1)\n"
        "gone = Gone.options(name=SERVICE_NAME, namespace=NAMESPACE, lifetime='detached')\n"
        "ray.get(gone.remote().__ray_ready__.remote())\n"
    )
    make_clip(tmp_path / "in.mp4", ClipSpec(n_frames=24))
    done = served.run("in.mp4", "out.mp4", "--model", MODEL, *lossless_cli_args(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "raypipe: WARNING: the raypipe service does not answer (" in done.stderr, done.stderr
    assert "; running the video here" in done.stderr, done.stderr
    assert_exact(tmp_path / "in.mp4", tmp_path / "out.mp4", MODEL)


def test_a_run_the_service_may_have_taken_is_not_run_again_here(
    served: Service, tmp_path: Path
) -> None:
    """A mailbox that answers, then goes while it takes the request and may come back (a
    stand-in that Ray restarts, as it does a mailbox with restarts left): Ray cannot say
    whether the call ran, so the command says so in one typed line and does not run the
    video itself too (ActorUnavailableError; one that died for good is run here, above).
    Runs after the service above is gone."""
    served.python(
        "import os\n"
        "from raypipe.distributed.service import NAMESPACE, SERVICE_NAME, _identity\n"
        "@ray.remote(num_cpus=0, max_restarts=1)\n"
        "class Unsure:\n"
        "    def info(self):\n"
        "        return _identity()\n"
        "    def submit(self, request):\n"
        "        os._exit(1)\n"
        "unsure = Unsure.options(name=SERVICE_NAME, namespace=NAMESPACE, lifetime='detached')\n"
        "ray.get(unsure.remote().__ray_ready__.remote())\n"
    )
    try:
        make_clip(tmp_path / "in.mp4", ClipSpec(n_frames=24))
        done = served.run("in.mp4", "out.mp4", "--model", MODEL, cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        said = "raypipe: error: ClusterError: the raypipe service did not confirm it took the run ("
        assert said in done.stderr and "it may still run it" in done.stderr, done.stderr
        assert "running the video here" not in done.stderr, done.stderr
        assert not (tmp_path / "out.mp4").exists()
    finally:
        served.python(
            "from raypipe.distributed.service import NAMESPACE, SERVICE_NAME\n"
            "ray.kill(ray.get_actor(SERVICE_NAME, namespace=NAMESPACE))\n"
        )
