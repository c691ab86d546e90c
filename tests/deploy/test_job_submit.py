"""`ray job submit` of the jobs/ entry points against a real `ray start --head`, token auth on.

The head runs on this machine with its own temp dir and free ports (8 logical CPUs, 2
logical GPUs) and token authentication on (``RAY_AUTH_MODE=token``; the server reads the
token from a 0600 file through ``RAY_AUTH_TOKEN_PATH``, clients pass it as
``RAY_AUTH_TOKEN``). It is started with ``--block`` and stopped by signalling that process
and then killing what is left of the process tree it started: never ``ray stop``, which
would stop every Ray on the machine.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_exact, assert_exact_to, lossless_cli_args
from ray_head import RAY, base_env, free_ports, head_files, start_head, stop_tree

from raypipe.examples.processors import Redact
from raypipe.infer.processors import apply_processor
from raypipe.testing import ClipSpec, make_clip

REPO = Path(__file__).resolve().parents[2]
MODEL = "builtin:invert"
LOSSLESS_ARGS = lossless_cli_args()  # qp=0 wins over --crf
JOB_TIMEOUT_S = 240
ERROR_LINE = re.compile(r"^raypipe: error: (\w+): (.+)$", re.M)


def _subcommands() -> set[str]:
    import argparse

    from raypipe.cli import build_parser

    actions = build_parser()._actions
    return {n for a in actions if isinstance(a, argparse._SubParsersAction) for n in a.choices}


def _needs(subcommand: str) -> None:
    if subcommand not in _subcommands():
        pytest.skip(f"raypipe.cli has no `{subcommand}` subcommand yet")


@dataclass
class Head:
    address: str  # Jobs API, http://127.0.0.1:PORT
    token: str
    temp_dir: Path
    home: Path

    def client_env(self, token: str | None) -> dict[str, str]:
        env = base_env(self.home)
        if token is not None:
            env["RAY_AUTH_MODE"] = "token"
            env["RAY_AUTH_TOKEN"] = token
        return env

    def api(self, path: str) -> Any:
        """GET the Jobs REST API with the token; the parsed JSON."""
        request = urllib.request.Request(
            self.address + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def job(self, submission_id: str) -> dict[str, Any]:
        return self.api(f"/api/jobs/{submission_id}")

    def logs(self, submission_id: str) -> str:
        return str(self.api(f"/api/jobs/{submission_id}/logs")["logs"])

    def submit(
        self, submission_id: str, script: str, *args: str, token: str | None = "", wait: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`ray job submit` exactly as cluster/README.md shows it; waits for the job unless
        not ``wait`` (``--no-wait``: only for its submission)."""
        command = [
            RAY, "job", "submit", "--address", self.address,
            "--submission-id", submission_id,
            "--working-dir", ".", "--runtime-env", "cluster/runtime_env.yaml",
            *([] if wait else ["--no-wait"]),
            "--", "python", f"jobs/{script}", *args,
        ]  # fmt: skip
        for _ in range(30):  # the head's job agent may still be starting on a busy machine
            result = subprocess.run(
                command,
                cwd=REPO,
                env=self.client_env(self.token if token == "" else token),
                capture_output=True,
                text=True,
                timeout=JOB_TIMEOUT_S,
            )
            if "No available agent to submit job" not in result.stderr + result.stdout:
                return result
            time.sleep(2)
        return result


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    files = head_files("rpjob-")
    temp_dir, home, token = files.temp_dir, files.home, files.token
    ports = free_ports(10)
    env = base_env(home)
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(files.token_file),
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",  # stop at once on SIGTERM
    )
    options = [
        "--port", str(ports[0]), "--dashboard-host", "127.0.0.1",
        "--dashboard-port", str(ports[1]), "--ray-client-server-port", str(ports[2]),
        "--dashboard-agent-listen-port", str(ports[3]),
        "--dashboard-agent-grpc-port", str(ports[4]),
        "--metrics-export-port", str(ports[5]), "--runtime-env-agent-port", str(ports[6]),
        "--node-manager-port", str(ports[7]), "--object-manager-port", str(ports[8]),
        "--num-cpus", "8", "--num-gpus", "2", "--object-store-memory", str(300 * 2**20),
    ]  # fmt: skip
    process, log = start_head(files, options, env)
    head = Head(f"http://127.0.0.1:{ports[1]}", token, temp_dir, home)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"ray start exited {process.returncode}: {files.tail()}")
            try:
                head.api("/api/jobs/")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"the Jobs API never came up: {files.tail()}")
                time.sleep(0.5)
        yield head
    finally:
        stop_tree(process)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _status(head: Head, submission_id: str) -> str:
    """The job's status in the Jobs API (final: `ray job submit` waited for it)."""
    return str(head.job(submission_id)["status"])


# ------------------------------------------------------------------ the entry points


@pytest.mark.parametrize(
    "script, subcommand",
    [("process_video.py", "run"), ("process_archive.py", "archive"),
     ("build_engines.py", "build-engines")],
)  # fmt: skip
def test_entry_point_help(script: str, subcommand: str) -> None:
    _needs(subcommand)
    result = subprocess.run(
        [sys.executable, str(REPO / "jobs" / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",  # runs from anywhere: the entry point finds the repository itself
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: raypipe {subcommand} ")


# --------------------------------------------------------------------- ray job submit


def test_process_video_job_with_token_is_exact(head: Head, tmp_path: Path) -> None:
    source, output = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(source, ClipSpec(n_frames=48, audio="aac"))
    result = head.submit(
        "video-ok", "process_video.py", str(source), str(output),
        "--model", MODEL, "--chunk-frames", "12", *LOSSLESS_ARGS,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert _status(head, "video-ok") == "SUCCEEDED"
    assert_exact(source, output, MODEL)

    logs = head.logs("video-ok")
    assert "48/48 frames (100%)" in logs, "progress reaches the job logs"
    assert f"wrote {output}: 48 frames in 4 chunks" in logs
    info = json.dumps(head.job("video-ok"))
    assert head.token not in logs and head.token not in info, "the token leaked"
    # What Ray unpacked for the job is the source, not .git, caches or media.
    packages = list(
        (head.temp_dir / "ray").glob("session_*/runtime_resources/working_dir_files/*/")
    )
    assert packages, "no working dir was unpacked"
    top = {p.name for p in packages[0].iterdir()}
    assert {"raypipe", "jobs", "cluster"} <= top and not top & {".git", ".venv", ".mypy_cache"}


def test_process_video_job_runs_a_processor_file_from_the_working_dir(
    head: Head, tmp_path: Path
) -> None:
    """`--processor path.py:Class` with a path inside the uploaded working dir: the driver
    reads the file there and its text travels to the actors."""
    source, output = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(source, ClipSpec(n_frames=24, audio="aac"))
    result = head.submit(
        "video-processor", "process_video.py", str(source), str(output),
        "--processor", "raypipe/examples/processors.py:Redact", "--chunk-frames", "12",
        *LOSSLESS_ARGS,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert _status(head, "video-processor") == "SUCCEEDED"
    assert_exact_to(source, output, lambda frames: apply_processor(Redact, frames))


@pytest.mark.parametrize(
    "token, refusal",
    [(None, "Unauthorized: Missing authentication token"),
     ("not-the-token", "Forbidden: Invalid authentication token")],
    ids=["no-token", "wrong-token"],
)  # fmt: skip
def test_submission_without_the_token_is_refused(
    head: Head, tmp_path: Path, token: str | None, refusal: str
) -> None:
    submission_id = f"refused-{'none' if token is None else 'wrong'}"
    result = head.submit(
        submission_id, "process_video.py", str(tmp_path / "in.mp4"), str(tmp_path / "o.mp4"),
        token=token,
    )  # fmt: skip
    assert result.returncode != 0
    assert refusal in result.stderr
    assert submission_id not in {j["submission_id"] for j in head.api("/api/jobs/")}
    with pytest.raises(urllib.error.HTTPError) as e:  # the REST API itself refuses too
        urllib.request.urlopen(head.address + "/api/jobs/", timeout=30)
    assert e.value.code == 401


def test_bad_input_job_fails_with_one_line_error(head: Head, tmp_path: Path) -> None:
    source = tmp_path / "notes.mp4"
    source.write_text("this is not a video\n")
    result = head.submit("video-bad", "process_video.py", str(source), str(tmp_path / "o.mp4"))
    assert result.returncode == 1  # `ray job submit` exits 1 for a FAILED job
    job = head.job("video-bad")
    assert job["status"] == "FAILED"
    assert "exit code 1" in job["message"]
    logs = head.logs("video-bad")
    errors = ERROR_LINE.findall(logs)
    assert [e[0] for e in errors] == ["CorruptVideoError"], logs
    assert "Traceback" not in logs
    assert not (tmp_path / "o.mp4").exists()


def test_a_relative_output_in_a_job_is_refused(head: Head, tmp_path: Path) -> None:
    """The job runs in Ray's temporary copy of its uploaded working dir: a relative output
    was written there and lost with it, the job SUCCEEDED."""
    source = tmp_path / "in.mp4"
    make_clip(source, ClipSpec(n_frames=12))
    result = head.submit("video-relative", "process_video.py", str(source), "rel_out.mp4")
    assert result.returncode == 1
    logs = head.logs("video-relative")
    errors = ERROR_LINE.findall(logs)
    assert [e[0] for e in errors] == ["ConfigError"], logs
    assert "'rel_out.mp4' is a relative path, and this Ray job runs in a temporary copy" in logs


def test_ray_job_stop_ends_the_job_as_ctrl_c_ends_the_command(head: Head, tmp_path: Path) -> None:
    """`ray job stop` sends the job's processes SIGTERM (then SIGKILL after 3 s): the driver
    says so in one line of the job's log, without Ray's native stack dump, and nothing is
    written at the output."""
    source, output = tmp_path / "long.mp4", tmp_path / "out.mp4"
    make_clip(source, ClipSpec(n_frames=600, width=320, height=240))
    submitted = head.submit(
        "video-stop", "process_video.py", str(source), str(output),
        "--model", "builtin:sharpen", "--chunk-frames", "24", *LOSSLESS_ARGS, wait=False,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while "frames (" not in head.logs("video-stop"):  # the run is going
        assert _status(head, "video-stop") in ("PENDING", "RUNNING"), head.logs("video-stop")
        assert time.monotonic() < deadline, head.logs("video-stop")
        time.sleep(0.5)
    stop = subprocess.run(
        [RAY, "job", "stop", "--address", head.address, "video-stop"],
        env=head.client_env(head.token), capture_output=True, text=True, timeout=JOB_TIMEOUT_S,
    )  # fmt: skip
    assert stop.returncode == 0, stop.stdout + stop.stderr
    while _status(head, "video-stop") != "STOPPED" or "raypipe: terminated" not in head.logs(
        "video-stop"
    ):
        assert time.monotonic() < deadline, (head.job("video-stop"), head.logs("video-stop"))
        time.sleep(0.5)
    logs = head.logs("video-stop")
    assert logs.rstrip().splitlines()[-1] == "raypipe: terminated (SIGTERM)", logs[-3000:]
    assert "SIGTERM received" not in logs and "Traceback" not in logs, logs[-3000:]
    assert not output.exists()


def test_archive_job_is_exact_resumes_and_reports_failures(head: Head, tmp_path: Path) -> None:
    _needs("archive")
    import pyarrow.parquet as pq

    inputs, outputs = tmp_path / "archive", tmp_path / "processed"
    inputs.mkdir()
    make_clip(inputs / "a.mp4", ClipSpec(n_frames=24, audio="aac"))
    make_clip(inputs / "b.mp4", ClipSpec(n_frames=30, seed=1))
    args = [str(inputs), str(outputs), "--model", MODEL, "--chunk-frames", "12", *LOSSLESS_ARGS]

    first = head.submit("archive-1", "process_archive.py", *args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert _status(head, "archive-1") == "SUCCEEDED"
    for name in ("a.mp4", "b.mp4"):
        assert_exact(inputs / name, outputs / name, MODEL)
    written = {name: (outputs / name).stat().st_mtime_ns for name in ("a.mp4", "b.mp4")}

    # Resume after adding a broken file: finished videos are skipped, not redone; the bad
    # one is a typed row in the report and the job FAILED (exit 3: some videos failed).
    (inputs / "c.mp4").write_text("this is not a video\n")
    second = head.submit("archive-2", "process_archive.py", *args)
    assert second.returncode == 1
    job = head.job("archive-2")
    assert job["status"] == "FAILED" and "exit code 3" in job["message"]
    report = pq.read_table(outputs / "_raypipe-report.parquet").to_pylist()
    status = {Path(r["uri"]).name: (r["status"], r["error_type"]) for r in report}
    assert status == {
        "a.mp4": ("skipped", ""),
        "b.mp4": ("skipped", ""),
        "c.mp4": ("failed", "CorruptVideoError"),
    }
    assert {n: (outputs / n).stat().st_mtime_ns for n in written} == written
    assert not (outputs / "c.mp4").exists()


def test_build_engines_job_help(head: Head) -> None:
    _needs("build-engines")
    result = head.submit("engines-help", "build_engines.py", "--help")
    assert result.returncode == 0, result.stderr[-3000:]
    assert head.job("engines-help")["status"] == "SUCCEEDED"
    assert "usage: raypipe build-engines" in head.logs("engines-help")
