"""Object-store credentials that are refused or may only read, on a real S3 API that checks
them: moto's server in its own process with IAM on (``INITIAL_NO_AUTH_ACTION_COUNT``: the
first requests, which make the bucket and a read-only user, go unchecked), reached by
``raypipe`` commands as a user runs them. From a sweep: refused credentials read "bucket
does not exist; create it first", an unreachable endpoint too, listing inputs and writing a
work folder failed as "PermissionError ... (unexpected ... please report it)", and a key
was taken as OUTPUT_DIR."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import closed_port

SETUP_REQUESTS = 10  # bucket, object; per user (2): the user, a policy, its attachment, a key


def _raypipe() -> str:
    return shutil.which("raypipe", path=os.path.dirname(sys.executable)) or "raypipe"


@pytest.fixture(scope="module")
def iam_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A moto server that checks credentials, with bucket ``shelf`` (holding the key
    ``shelf/in/clip.mp4``) and a user who may only read; yields the reader's environment
    for ``raypipe`` commands."""
    pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("moto") / "server.log"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)}
    exe = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or "moto_server"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out, env=env
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(f"moto_server did not come up: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        setup = {"endpoint_url": endpoint, "region_name": "us-east-1",
                 "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}  # fmt: skip
        s3, iam = boto3.client("s3", **setup), boto3.client("iam", **setup)
        s3.create_bucket(Bucket="shelf")
        s3.put_object(Bucket="shelf", Key="in/clip.mp4", Body=b"not read")
        keys = {}
        for user, actions in (
            ("reader", ["s3:Get*", "s3:List*", "s3:Head*"]),
            ("writer", ["s3:Get*", "s3:List*", "s3:Head*", "s3:Put*"]),  # deletes nothing
        ):
            iam.create_user(UserName=user)
            allowed = {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
            }
            policy = iam.create_policy(PolicyName=user, PolicyDocument=json.dumps(allowed))
            iam.attach_user_policy(UserName=user, PolicyArn=policy["Policy"]["Arn"])
            keys[user] = iam.create_access_key(UserName=user)["AccessKey"]
        key = keys["reader"]
        scrubbed = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC"))}
        yield {
            **scrubbed,
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "FSSPEC_S3": json.dumps({"endpoint_url": endpoint}),
            "RAY_ADDRESS": "",
            "WRITER_KEY": keys["writer"]["AccessKeyId"],
            "WRITER_SECRET": keys["writer"]["SecretAccessKey"],
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_raypipe(), *args, "-q"], env=env, capture_output=True, text=True, timeout=300
    )


def _fails(env: dict[str, str], said: str, *args: str) -> None:
    """``raypipe ARGS`` fails with exit 1 and one line that starts ``raypipe: error: `` and
    then ``said``."""
    done = _run(env, *args)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"raypipe: error: {said}"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_refused_credentials_and_a_dead_endpoint_say_so_before_any_work(
    iam_s3: dict[str, str], clips: dict[str, Path], tmp_path: Path
) -> None:
    bad = {**iam_s3, "AWS_ACCESS_KEY_ID": "nobody", "AWS_SECRET_ACCESS_KEY": "wrong"}
    _fails(
        bad,
        "ConfigError: output 's3://shelf/out/o.mp4': bucket 'shelf' refuses these credentials "
        "(Forbidden): check them (AWS_ACCESS_KEY_ID and ",
        *("run", str(clips["vfr"]), "s3://shelf/out/o.mp4"),
    )
    _fails(
        bad,
        "InputPermissionError: inputs 's3://shelf/in/': access denied",
        *("archive", "s3://shelf/in/", str(tmp_path / "out")),
    )
    dead = {
        **iam_s3,
        "FSSPEC_S3": json.dumps({"endpoint_url": f"http://127.0.0.1:{closed_port()}"}),
    }
    done = _run(dead, "run", str(clips["vfr"]), "s3://shelf/out/o.mp4")
    assert done.returncode == 1
    assert "cannot reach bucket 'shelf': EndpointConnectionError" in done.stderr, done.stderr
    # a key is no OUTPUT_DIR: an archive made s3://shelf/in/clip.mp4/... beside the object
    (tmp_path / "src").mkdir()
    shutil.copy(clips["vfr"], tmp_path / "src" / "a.mp4")
    keyed = _run(iam_s3, "archive", str(tmp_path / "src"), "s3://shelf/in/clip.mp4")
    assert keyed.returncode == 1
    assert "'s3://shelf/in/clip.mp4' is a file, not a directory" in keyed.stderr, keyed.stderr


def test_a_bucket_these_credentials_may_only_read_fails_the_run_typed(
    iam_s3: dict[str, str], clips: dict[str, Path]
) -> None:
    """The reader passes the bucket check (it may see the bucket), then may not write
    the work folder's record: a typed one-line error naming where, not "PermissionError:
    Access Denied (unexpected ...)"."""
    _fails(
        iam_s3,
        "StorageError: cannot write in 's3://shelf/out/.o.mp4.raypipe-work' (Access Denied): "
        "these credentials may not write there",
        *("run", str(clips["vfr"]), "s3://shelf/out/o.mp4"),
    )


def test_a_work_folder_these_credentials_may_not_delete_is_said_to_be_left(
    iam_s3: dict[str, str], clips: dict[str, Path]
) -> None:
    """Credentials that may write but not delete: the output is made, and its work
    folder's segments stay; the run said nothing of them, exit 0 (a sweep)."""
    writer = {
        **iam_s3,
        "AWS_ACCESS_KEY_ID": iam_s3["WRITER_KEY"],
        "AWS_SECRET_ACCESS_KEY": iam_s3["WRITER_SECRET"],
    }
    done = subprocess.run(
        [_raypipe(), "run", str(clips["vfr"]), "s3://shelf/kept/o.mp4", "--chunk-frames", "12"],
        env=writer, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "its work folder s3://shelf/kept/.o.mp4.raypipe-work could not be removed (" in (
        done.stderr
    ), done.stderr
    assert "these credentials may not delete there; remove it by hand" in done.stderr


def test_a_killed_writers_staged_upload_is_removed_by_the_next_assembly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An output bound for an object store is built in the machine's temp folder first. An
    assembly killed meanwhile (an interrupted archive) left it there for good, since the
    stale-file sweep looked only beside local outputs (a sweep found one per interrupt)."""
    import tempfile

    from raypipe import storage

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    mine = storage.local_staging("s3://shelf/out/a.mp4", ".mp4")
    assert os.path.basename(mine).startswith(f"raypipe-staging-{os.getpid()}-")
    dead = tmp_path / f"raypipe-staging-{gone.pid}-abc.mp4"
    dead.write_bytes(b"half a video")
    other = tmp_path / "raypipe-notes.txt"  # not a staged file: left alone
    other.write_text("x")
    assert storage.remove_stale_staging("s3://shelf/out/b.mp4") == 1
    assert not dead.exists() and os.path.exists(mine) and other.exists()
