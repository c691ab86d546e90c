"""The cluster-wide engine cache: keys, one build per key across processes, no torn entry,
corrupt or partial entries rebuilt; on a local directory, memory:// and S3 (moto server)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from raypipe.errors import ConfigError, DeviceUnavailableError, EngineCacheError, RaypipeError
from raypipe.infer.trt.cache import EngineCache
from raypipe.infer.trt.files import MANIFEST, flock
from raypipe.infer.trt.key import EngineKey

KEY = EngineKey(
    model_sha256=hashlib.sha256(b"model").hexdigest(),
    gpu_name="NVIDIA H100 80GB HBM3",
    compute_capability="9.0",
    tensorrt_version="10.9.0",
    ort_version="1.22.0",
    cuda_version="12.8",
    precision="fp16",
    profile="input:1x3x1080x1920|input:8x3x1080x1920|input:8x3x1080x1920",
)
OTHER_VALUES = {
    "model_sha256": hashlib.sha256(b"another model").hexdigest(),
    "gpu_name": "NVIDIA A100-SXM4-80GB",
    "compute_capability": "8.0",
    "tensorrt_version": "10.8.0",
    "ort_version": "1.21.0",
    "cuda_version": "12.6",
    "precision": "fp32",
    "profile": "input:1x3x720x1280|input:8x3x720x1280|input:8x3x720x1280",
}
ENGINE_BYTES = 3 << 20  # a few MB, so a torn copy would be visible


# --- a fake TensorRT build: files like the EP's, a mark per call, slow on request -----------


def fake_build(directory: str, *, marks: str, sleep_s: float = 0.0, payload: bytes = b"") -> None:
    """Write an .engine/.profile/.timing like ORT's TensorRT EP; append one line to ``marks``."""
    with open(marks, "a") as f:
        f.write(f"{os.getpid()}\n")
    block = hashlib.sha256(payload or b"engine").digest()
    with open(
        os.path.join(directory, "TensorrtExecutionProvider_TRTKernel_0_sm90.engine"), "wb"
    ) as f:
        f.write(block * (ENGINE_BYTES // len(block)))
        f.flush()
        time.sleep(sleep_s / 2)  # a reader looking now would see a half-built engine
        f.write(block * 7)
    Path(directory, "TensorrtExecutionProvider_TRTKernel_0_sm90.profile").write_bytes(b"profile")
    Path(directory, "TensorrtExecutionProvider_cache_sm90.timing").write_bytes(b"timing")
    time.sleep(sleep_s / 2)


def build_count(marks: Path) -> int:
    return len(marks.read_text().splitlines()) if marks.exists() else 0


def files_of(directory: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir())}


# --- keys -------------------------------------------------------------------------------------


def test_key_digest_is_stable_and_hex() -> None:
    assert KEY.digest() == EngineKey(**KEY.to_dict()).digest()
    assert len(KEY.digest()) == 64 and int(KEY.digest(), 16) >= 0
    # Pinned: a changed canonical form would orphan every published engine.
    assert KEY.digest() == "17da1cc3834c4440a2197c808f2f5edde81bdfa8f1e6c7acdac0189c48a1e8af"


@pytest.mark.parametrize("field", sorted(OTHER_VALUES))
def test_every_key_field_changes_the_digest(field: str) -> None:
    other = dataclasses.replace(KEY, **{field: OTHER_VALUES[field]})
    assert other.digest() != KEY.digest()
    assert other.to_dict()[field] == OTHER_VALUES[field]


def test_key_to_dict_has_every_field() -> None:
    assert set(KEY.to_dict()) == set(OTHER_VALUES)
    assert json.loads(json.dumps(KEY.to_dict())) == KEY.to_dict()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"model_sha256": "abc"}, r"model_sha256 must be 64 lowercase hex digits .*got 'abc'"),
        ({"precision": "int8"}, r"precision must be 'fp32' or 'fp16', got 'int8'"),
        ({"gpu_name": " "}, r"EngineKey.gpu_name must be a non-empty string, got ' '"),
        ({"profile": ""}, r"EngineKey.profile must be a non-empty string, got ''"),
    ],
)
def test_bad_keys_are_config_errors(changes: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(KEY, **changes)


# --- one build per key across processes -----------------------------------------------------


def _race_worker(
    url: str,
    storage_options: dict[str, Any],
    local_dir: str,
    marks: str,
    barrier: Any,
    results: Any,
) -> None:
    try:
        cache = EngineCache(url, storage_options=storage_options, poll_interval_s=0.05)
        barrier.wait(timeout=300)  # generous: spawning is slow on a loaded 2-core machine
        build = functools.partial(fake_build, marks=marks, sleep_s=1.0)
        path = cache.ensure(KEY, build, local_dir=local_dir)
        results.put(("ok", path, files_of(path)))
    except BaseException as e:  # reported to the test, which fails with it
        results.put(("error", repr(e), {}))


def _race(
    url: str, storage_options: dict[str, Any], local_dirs: list[str], marks: Path
) -> list[tuple[str, str, dict[str, bytes]]]:
    """Two spawned processes call ensure() at once while this one watches the shared entry."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(
            target=_race_worker, args=(url, storage_options, d, str(marks), barrier, results)
        )
        for d in local_dirs
    ]
    for p in procs:
        p.start()
    watcher = EngineCache(url, storage_options=storage_options)
    torn: list[str] = []
    seen_complete = 0

    def watch() -> None:
        nonlocal seen_complete
        fs, entry = watcher.fs, watcher.entry_path(KEY)
        while any(p.is_alive() for p in procs):
            fs.invalidate_cache()
            if fs.exists(f"{entry}/{MANIFEST}"):
                state = watcher.check(KEY)
                if state.complete:
                    seen_complete += 1
                else:
                    torn.append(state.reason)
            time.sleep(0.01)

    thread = threading.Thread(target=watch)
    thread.start()
    out: list[tuple[str, str, dict[str, bytes]]] = []
    while len(out) < len(procs):
        try:
            out.append(results.get(timeout=1))
        except queue.Empty:
            if not any(p.is_alive() for p in procs) and results.empty():
                codes = [p.exitcode for p in procs]
                raise AssertionError(
                    f"a worker died without a result (exit codes {codes})"
                ) from None
    for p in procs:
        p.join(timeout=60)
    thread.join(timeout=60)
    assert not torn, f"a reader saw an entry with a manifest but wrong files: {torn[:3]}"
    assert all(p.exitcode == 0 for p in procs)
    return out


def _assert_race_result(out: list[tuple[str, str, dict[str, bytes]]], marks: Path) -> None:
    assert [o[0] for o in out] == ["ok", "ok"], out
    assert build_count(marks) == 1, "build ran more than once for one key"
    first, second = out[0][2], out[1][2]
    assert first == second
    assert set(first) == {
        MANIFEST,
        "TensorrtExecutionProvider_TRTKernel_0_sm90.engine",
        "TensorrtExecutionProvider_TRTKernel_0_sm90.profile",
        "TensorrtExecutionProvider_cache_sm90.timing",
    }
    assert len(first["TensorrtExecutionProvider_TRTKernel_0_sm90.engine"]) > ENGINE_BYTES


@pytest.mark.parametrize("shared_local_dir", [False, True], ids=["own-local-dir", "same-local-dir"])
def test_two_processes_race_one_build_on_a_local_dir(
    tmp_path: Path, shared_local_dir: bool
) -> None:
    marks = tmp_path / "marks"
    local = (
        [str(tmp_path / "node" / "engine")] * 2
        if shared_local_dir
        else [str(tmp_path / "node-a" / "engine"), str(tmp_path / "node-b" / "engine")]
    )
    out = _race(str(tmp_path / "shared"), {}, local, marks)
    _assert_race_result(out, marks)
    names = os.listdir(tmp_path / "shared")
    assert sorted(n for n in names if not n.startswith(".")) == [KEY.digest()]
    assert not [n for n in names if n.startswith((".tmp-", ".trash-"))]


# --- corrupt or partial entries -------------------------------------------------------------


@pytest.fixture(params=["local", "memory"])
def cache_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "local":
        yield str(tmp_path / "shared")
    else:
        url = f"memory://raypipe-test-{uuid.uuid4().hex}"
        yield url
        with contextlib.suppress(FileNotFoundError):
            fsspec.filesystem("memory").rm(url.removeprefix("memory://"), recursive=True)


def _ensure(cache: EngineCache, tmp_path: Path, marks: Path, name: str, **kw: Any) -> str:
    build: Callable[[str], None] = functools.partial(fake_build, marks=str(marks), **kw)
    return cache.ensure(KEY, build, local_dir=tmp_path / name)


def test_second_ensure_copies_without_building(cache_url: str, tmp_path: Path) -> None:
    cache, marks = EngineCache(cache_url), tmp_path / "marks"
    first = _ensure(cache, tmp_path, marks, "a")
    second = _ensure(cache, tmp_path, marks, "b")
    assert build_count(marks) == 1
    assert files_of(first) == files_of(second)
    assert cache.check(KEY).complete
    manifest = json.loads(Path(second, MANIFEST).read_text())
    assert manifest["key"] == KEY.to_dict() and manifest["digest"] == KEY.digest()
    assert {f["name"]: f["size"] for f in manifest["files"]} == {
        n: len(b) for n, b in files_of(second).items() if n != MANIFEST
    }
    assert _ensure(cache, tmp_path, marks, "b") == second  # a verified local copy is reused
    assert build_count(marks) == 1


def _corrupt(cache: EngineCache, how: str) -> None:
    entry, fs = cache.entry_path(KEY), cache.fs
    engine = f"{entry}/TensorrtExecutionProvider_TRTKernel_0_sm90.engine"
    if how == "truncated":
        fs.pipe_file(engine, fs.cat_file(engine)[:1000])
    elif how == "wrong-sha":
        data = bytearray(fs.cat_file(engine))
        data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
        fs.pipe_file(engine, bytes(data))
    elif how == "missing-manifest":
        fs.rm_file(f"{entry}/{MANIFEST}")
    elif how == "missing-file":
        fs.rm_file(engine)
    elif how == "garbage-manifest":
        fs.pipe_file(f"{entry}/{MANIFEST}", b"{not json")
    elif how == "manifest-of-another-key":
        manifest = json.loads(fs.cat_file(f"{entry}/{MANIFEST}"))
        manifest["key"]["gpu_name"] = "NVIDIA A100-SXM4-80GB"
        fs.pipe_file(f"{entry}/{MANIFEST}", json.dumps(manifest).encode())
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("truncated", r"has 1000 bytes .* the manifest says \d+ bytes"),
        ("wrong-sha", r"has \d+ bytes \(sha256 [0-9a-f]{12}\.\.\.\), the manifest says"),
        ("missing-manifest", r"MANIFEST.json is missing"),
        ("missing-file", r"TensorrtExecutionProvider_TRTKernel_0_sm90.engine is missing"),
        ("garbage-manifest", r"MANIFEST.json is unreadable"),
        ("manifest-of-another-key", r"manifest names another key"),
    ],
)
def test_corrupt_entry_is_detected_and_rebuilt(
    cache_url: str, tmp_path: Path, how: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache, marks = EngineCache(cache_url), tmp_path / "marks"
    good = files_of(_ensure(cache, tmp_path, marks, "a"))
    _corrupt(cache, how)
    state = cache.check(KEY)
    assert not state.complete
    assert re.search(reason, state.reason), state.reason
    with caplog.at_level(logging.WARNING, logger="raypipe.infer"):
        rebuilt = _ensure(cache, tmp_path, marks, "b")
    assert build_count(marks) == 2
    assert files_of(rebuilt).keys() == good.keys()
    assert cache.check(KEY).complete
    assert "incomplete engine cache entry" in caplog.text


def test_corrupt_local_copy_is_copied_again_not_rebuilt(cache_url: str, tmp_path: Path) -> None:
    cache, marks = EngineCache(cache_url), tmp_path / "marks"
    local = _ensure(cache, tmp_path, marks, "a")
    engine = Path(local, "TensorrtExecutionProvider_TRTKernel_0_sm90.engine")
    engine.write_bytes(engine.read_bytes()[:10])
    assert _ensure(cache, tmp_path, marks, "a") == local
    assert build_count(marks) == 1
    assert len(engine.read_bytes()) > ENGINE_BYTES


def test_failed_build_publishes_nothing_and_releases_the_lock(
    cache_url: str, tmp_path: Path
) -> None:
    cache, marks = EngineCache(cache_url), tmp_path / "marks"

    def broken(directory: str) -> None:
        Path(directory, "half.engine").write_bytes(b"x" * 10)
        raise RuntimeError("TensorRT input: kMIN dimensions in profile 0 are [0,3,8,8]")

    match = (
        r"building engine [0-9a-f]{64} failed: RuntimeError: TensorRT input: kMIN .*; nothing "
        r"was published\. Check that TensorRT was granted"
    )
    with pytest.raises(EngineCacheError, match=match) as info:
        cache.ensure(KEY, broken, local_dir=tmp_path / "a")
    assert isinstance(info.value, RaypipeError) and isinstance(info.value, RuntimeError)
    assert not cache.check(KEY).complete
    assert not cache.fs.exists(f"{cache.entry_path(KEY)}/{MANIFEST}")
    _ensure(cache, tmp_path, marks, "a")  # the lock was released: this builds
    assert build_count(marks) == 1


def test_typed_build_errors_pass_through(cache_url: str, tmp_path: Path) -> None:
    def no_trt(directory: str) -> None:
        raise DeviceUnavailableError("TensorRT was not granted")

    with pytest.raises(DeviceUnavailableError, match="TensorRT was not granted"):
        EngineCache(cache_url).ensure(KEY, no_trt, local_dir=tmp_path / "a")


def test_build_that_writes_nothing_is_an_error(cache_url: str, tmp_path: Path) -> None:
    match = r"build for engine [0-9a-f]{64} wrote no files into .*; expected the TensorRT EP's"
    with pytest.raises(EngineCacheError, match=match):
        EngineCache(cache_url).ensure(KEY, lambda d: None, local_dir=tmp_path / "a")


# --- locks ------------------------------------------------------------------------------------


def test_waiting_for_a_held_local_lock_times_out_with_advice(tmp_path: Path) -> None:
    cache = EngineCache(str(tmp_path / "shared"), wait_timeout_s=0.3, poll_interval_s=0.05)
    lock = f"{cache.root}/.locks/{KEY.digest()}.lock"
    with flock(lock) as held:  # another open file description: flock conflicts
        assert held
        match = (
            r"waited 0.3 s for engine [0-9a-f]{64} to be built by another process \(lock .*\.lock\)"
            r" and it did not appear; .* delete the lock file, or raise wait_timeout_s"
        )
        with pytest.raises(EngineCacheError, match=match):
            _ensure(cache, tmp_path, tmp_path / "marks", "a")
    assert build_count(tmp_path / "marks") == 0


def _hold_object_lock(cache: EngineCache, age_s: float) -> str:
    path = f"{cache.root}/.locks/{KEY.digest()}.lock"
    body = {"owner": "someone", "host": "node-7", "pid": 1, "created_s": time.time() - age_s}
    cache.fs.pipe_file(path, json.dumps(body).encode())
    return path


def test_object_store_lock_held_blocks_and_stale_lock_is_broken(tmp_path: Path) -> None:
    url = f"memory://raypipe-test-{uuid.uuid4().hex}"
    marks = tmp_path / "marks"
    busy = EngineCache(url, wait_timeout_s=0.3, poll_interval_s=0.05, stale_lock_s=60)
    _hold_object_lock(busy, age_s=1)
    with pytest.raises(EngineCacheError, match="to be built by another process"):
        _ensure(busy, tmp_path, marks, "a")
    assert build_count(marks) == 0
    lock = _hold_object_lock(busy, age_s=120)  # older than stale_lock_s: abandoned
    _ensure(busy, tmp_path, marks, "a")
    assert build_count(marks) == 1
    assert not busy.fs.exists(lock), "the builder's own lock was not released"
    fsspec.filesystem("memory").rm(url.removeprefix("memory://"), recursive=True)


def test_bad_cache_options() -> None:
    with pytest.raises(ConfigError, match="engine cache url must be a path or fsspec URL"):
        EngineCache("")
    with pytest.raises(ConfigError, match="poll_interval_s must be a number of seconds > 0"):
        EngineCache("memory://x", poll_interval_s=0)
    with pytest.raises(ConfigError, match=r"cannot open engine cache 'nosuchproto://x'"):
        EngineCache("nosuchproto://x")


# --- S3 (moto's server on 127.0.0.1, through s3fs) --------------------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    """A bucket on a local moto S3 server, and the s3fs storage options that reach it."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # fake
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **creds).create_bucket(
        Bucket="engines"
    )
    options = {
        "key": creds["aws_access_key_id"],
        "secret": creds["aws_secret_access_key"],
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        "skip_instance_cache": True,
    }
    yield options
    server.stop()


def test_s3_build_publish_corrupt_rebuild(s3: dict[str, Any], tmp_path: Path) -> None:
    url = f"s3://engines/{uuid.uuid4().hex}"
    cache, marks = EngineCache(url, storage_options=s3), tmp_path / "marks"
    first = _ensure(cache, tmp_path, marks, "a")
    assert cache.check(KEY).complete
    assert not cache.fs.exists(f"{cache.root}/.locks/{KEY.digest()}.lock")
    assert not [p for p in cache.fs.ls(cache.root) if "/.tmp-" in p]
    assert files_of(_ensure(cache, tmp_path, marks, "b")) == files_of(first)
    assert build_count(marks) == 1
    _corrupt(cache, "truncated")
    _ensure(cache, tmp_path, marks, "c")
    assert build_count(marks) == 2
    assert cache.check(KEY).complete


def test_s3_two_processes_race_one_build(s3: dict[str, Any], tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    url = f"s3://engines/{uuid.uuid4().hex}"
    out = _race(url, s3, [str(tmp_path / "a" / "e"), str(tmp_path / "b" / "e")], marks)
    _assert_race_result(out, marks)


# --- TensorRT helpers ---------------------------------------------------------------------------


def test_tensorrt_builder_without_a_gpu_fails_typed_and_publishes_nothing(tmp_path: Path) -> None:
    from raypipe.infer import builtin_bytes, cuda_available
    from raypipe.infer.trt.key import tensorrt_builder
    from raypipe.infer.trt.options import profile_shapes

    if cuda_available():
        pytest.skip("this machine has a CUDA device")
    cache = EngineCache(str(tmp_path / "shared"))
    build = tensorrt_builder(
        builtin_bytes("invert"), precision="fp16", profile=profile_shapes("input", 2, 8, 8)
    )
    with pytest.raises(DeviceUnavailableError, match="device 'gpu' asked for"):
        cache.ensure(KEY, build, local_dir=tmp_path / "local")
    assert not cache.check(KEY).complete
    assert not (tmp_path / "local").exists()


def test_engine_key_for_without_a_gpu_says_so() -> None:
    from raypipe.infer import cuda_available
    from raypipe.infer.trt.key import engine_key_for
    from raypipe.infer.trt.options import profile_shapes

    if cuda_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(DeviceUnavailableError, match="no CUDA device 0 visible"):
        engine_key_for(KEY.model_sha256, precision="fp16", profile=profile_shapes("input", 2, 8, 8))


@pytest.mark.gpu("ort-tensorrt")
def test_gpu_build_once_then_every_session_loads_the_cached_engine(tmp_path: Path) -> None:
    import numpy as np

    from raypipe.infer import create_session, granted_providers
    from raypipe.infer.heavy import build_superres
    from raypipe.infer.session import CUDA, TENSORRT
    from raypipe.infer.trt.key import engine_key_for, tensorrt_builder
    from raypipe.infer.trt.options import profile_shapes, tensorrt_options

    data = build_superres(channels=16, blocks=2).SerializeToString()
    profile = profile_shapes("input", 2, 64, 96)
    key = engine_key_for(hashlib.sha256(data).hexdigest(), precision="fp16", profile=profile)
    assert key.gpu_name and key.tensorrt_version.startswith(("10.", "11."))
    cache = EngineCache(str(tmp_path / "shared"), local_root=tmp_path / "local")
    directory = cache.ensure(
        key, tensorrt_builder(data, precision="fp16", profile=profile, builder_optimization_level=1)
    )
    assert any(name.endswith(".engine") for name in os.listdir(directory))

    def must_not_build(d: str) -> None:
        raise AssertionError("cache miss")

    again = cache.ensure(key, must_not_build, local_dir=tmp_path / "other-node")
    session = create_session(
        data,
        device="gpu",
        providers=[TENSORRT, CUDA],
        provider_options={
            TENSORRT: tensorrt_options(again, "fp16", profile, builder_optimization_level=1)
        },
    )
    assert granted_providers(session)[0] == TENSORRT
    x = np.random.default_rng(0).random((2, 3, 64, 96), dtype=np.float32)
    (y,) = session.run(["output"], {"input": x})
    assert y.shape == (2, 3, 128, 192)
    assert cache.ensure(key, must_not_build, local_dir=tmp_path / "other-node") == again
