"""A `raypipe run --address` whose cluster's head goes away mid-run: Ray's driver waited
60 s, then ended the process with status 1 and nothing on the terminal (a sweep). The
command now says so in one line once the GCS has refused connections for
``CLUSTER_LOST_S``, and leaves nothing at its output, its work folder included. So does a
`raypipe serve` with a run in flight (it vanished without a line: the line went to the
run's command, which was gone; a sweep), and the command of that run."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ray_head import RAY, base_env, free_ports, head_files, start_head, stop_tree
from test_serve import start_service

from raypipe.distributed.cluster import CLUSTER_LOST_S
from raypipe.testing import ClipSpec, make_clip


def test_a_run_whose_head_goes_away_ends_in_one_line(tmp_path: Path) -> None:
    files = head_files("rplost-")
    (port,) = free_ports(1)
    env = base_env(files.home)
    env.update(RAY_AUTH_MODE="token")
    client_env = {**env, "RAY_AUTH_TOKEN": files.token}
    options = ["--port", str(port), "--include-dashboard", "false", "--num-cpus", "4",
               "--num-gpus", "0", "--object-store-memory", str(300 * 2**20)]  # fmt: skip
    head, head_log = start_head(
        files, options, {**env, "RAY_AUTH_TOKEN_PATH": str(files.token_file)}
    )
    address = f"127.0.0.1:{port}"
    serve = None
    try:
        deadline = time.monotonic() + 120
        while subprocess.run([RAY, "status", f"--address={address}"], env=client_env,
                             capture_output=True, check=False).returncode != 0:  # fmt: skip
            assert head.poll() is None and time.monotonic() < deadline, files.tail()
            time.sleep(1)
        serve_log = files.temp_dir / "serve.log"
        serve = start_service(address, client_env, serve_log, deadline + 120)
        make_clip(tmp_path / "in.mp4", ClipSpec(n_frames=600, width=320, height=240))

        def command(output: str, *more: str) -> subprocess.Popen[str]:
            args = [sys.executable, "-m", "raypipe.cli", "run", "in.mp4", output, "--model",
                    "builtin:sharpen", "--chunk-frames", "12", "--workers", "1", "--address",
                    address, "-q", *more]  # fmt: skip
            return subprocess.Popen(args, cwd=tmp_path, env=client_env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip

        run = command("out.mp4", "--no-service")  # the command is the driver
        served = command("served.mp4")  # handed to the service
        for name, process in (("out.mp4", run), ("served.mp4", served)):
            while not list(tmp_path.glob(f".{name}.raypipe-work/*/*.rpseg")):  # a segment
                assert process.poll() is None and time.monotonic() < deadline + 240, (
                    process.communicate(),
                    serve_log.read_text(),
                )
                time.sleep(0.1)
        stop_tree(head, signal.SIGKILL)  # the head's machine gone
        lost = time.monotonic()
        _, err = run.communicate(timeout=120)
        assert run.returncode == 1, err
        assert time.monotonic() - lost < CLUSTER_LOST_S + 20, "Ray's own end takes 60 s"
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            f"raypipe: error: ClusterError: the Ray cluster at {address} stopped answering"
        ), err
        assert serve.wait(timeout=60) == 1, serve_log.read_text()
        last = serve_log.read_text().strip().splitlines()[-1]
        assert last.startswith(
            f"raypipe: error: ClusterError: the Ray cluster at {address} stopped answering"
        ) and last.endswith(
            "its head is gone; the run stops with nothing written at its output; raypipe "
            "serve stops: start it again once the cluster is back"
        ), serve_log.read_text()
        _, err = served.communicate(timeout=60)
        assert served.returncode == 1, err
        assert (
            err.strip()
            .splitlines()[-1]
            .startswith("raypipe: error: ClusterError: the raypipe service stopped during the run")
        ), err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
    finally:
        if serve is not None:
            stop_tree(serve, signal.SIGKILL)
        stop_tree(head, signal.SIGKILL)
        head_log.close()
        shutil.rmtree(files.temp_dir, ignore_errors=True)
