"""Helpers for the tests that start a real `ray start --head` on this machine: free ports, a
clean environment, and stopping exactly the process tree that was started (never `ray stop`,
which would stop every Ray on the machine)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
# Variables that would point a client or the cluster somewhere else, or at another token.
SCRUB = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
         "RAY_AUTH_TOKEN_PATH")  # fmt: skip


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `python` is this interpreter
    env["HOME"] = str(home)  # no ~/.ray/auth_token of this machine's user
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def stop_tree(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a process we started (``ray start --block`` shuts its node down on SIGTERM) and
    every process under it, nothing else."""
    import psutil

    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]
    except psutil.NoSuchProcess:
        tree = []
    process.send_signal(sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs(tree, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


@dataclass
class HeadFiles:
    """A head's own temp dir (short: Ray's unix sockets live under it, 107-byte limit), an
    empty HOME, and the token file the head reads (0600)."""

    temp_dir: Path
    home: Path
    token: str
    token_file: Path

    def tail(self) -> str:
        """The end of ``ray start``'s output."""
        return (self.temp_dir / "ray-start.log").read_text(errors="replace")[-2000:]


def head_files(prefix: str) -> HeadFiles:
    temp_dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    home = temp_dir / "home"
    home.mkdir()
    token = secrets.token_hex(32)
    token_file = temp_dir / "ray_auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    return HeadFiles(temp_dir, home, token, token_file)


def start_head(
    files: HeadFiles, options: list[str], env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], BinaryIO]:
    """``ray start --head --block`` with ``options`` on 127.0.0.1 and the head's temp dir,
    its output in ``ray-start.log`` (returned open: close it after :func:`stop_tree`), run
    from the temp dir (the cluster's working directory)."""
    command = [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", *options,
               "--temp-dir", str(files.temp_dir / "ray"), "--disable-usage-stats"]  # fmt: skip
    log = open(files.temp_dir / "ray-start.log", "wb")
    process = subprocess.Popen(
        command,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=files.temp_dir,
    )
    return process, log
