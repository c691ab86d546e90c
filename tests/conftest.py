"""Shared fixtures: generated clips, a real local Ray with logical GPUs, the gpu marker's gate."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raypipe.config import ChunkConfig, EncodeConfig
from raypipe.testing import CLIP_KINDS, decode_all, make_named_clip

# The test process ends with pytest's exit status, skipping Python's finalization, where Ray's
# native threads outlive ray.shutdown() (the plugin's docstring says what was seen).
pytest_plugins = ["raypipe.testing.pytest_exit"]

# Lossless RGB H.264 (with B-frames): decoded output frames equal the model's output exactly.
LOSSLESS = EncodeConfig(codec="libx264rgb", crf=None, preset="medium", options={"qp": "0"})


def lossless_options() -> dict[str, object]:
    """:data:`LOSSLESS` as ``process_video``/``process_archive`` options (a fresh dict)."""
    return {"codec": LOSSLESS.codec, "crf": None, "encoder_options": dict(LOSSLESS.options)}


def lossless_cli_args() -> list[str]:
    """:data:`LOSSLESS` as ``raypipe run``/``archive`` arguments."""
    options = [a for k, v in LOSSLESS.options.items() for a in ("--encoder-option", f"{k}={v}")]
    return ["--codec", LOSSLESS.codec, *options]


def running_command(command: list[str], **popen: Any) -> tuple[subprocess.Popen[str], str]:
    """``command`` (a ``raypipe run``) started with its output piped, returned once its first
    progress line has come (the run is going), with the lines it wrote until then."""
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, **popen
    )
    assert process.stderr is not None
    seen = ""
    while "frames (" not in seen:
        line = process.stderr.readline()
        assert line, f"the command ended before any progress: {seen}"
        seen += line
    return process, seen


def pytest_configure(config: pytest.Config) -> None:
    """raypipe's bytecode is written before the tests start processes: with the README's
    editable install, where ``PYTHONDONTWRITEBYTECODE`` is set, every Ray worker and actor
    of the suite would otherwise compile raypipe's modules again
    (:mod:`raypipe.testing.bytecode`)."""
    from raypipe.testing.bytecode import compile_raypipe

    compile_raypipe()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.gpu("ort-tensorrt", ...)``: run, skip or fail the test by what it
    needs (:mod:`raypipe.testing.gpu_gate`: skipped without CUDA, failing where CUDA is
    visible and a need is not met; ``RAYPIPE_GPU_TESTS=skip|require``). The local Ray of
    :func:`ray_local` is shut down before a module that does not use it."""
    if _module_of(item) not in _ray_local_modules:
        _shut_local_ray()
    markers = list(item.iter_markers("gpu"))
    if not markers:
        return
    from raypipe.testing.gpu_gate import gate

    needs = [need for marker in markers for need in marker.args] or ["cuda"]
    action, reason = gate(dict.fromkeys(needs))
    if action == "skip":
        pytest.skip(reason)
    if action == "fail":
        pytest.fail(reason, pytrace=False)


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every clip kind of :data:`raypipe.testing.CLIP_KINDS`, written once per session."""
    directory = tmp_path_factory.mktemp("clips")
    return {kind: make_named_clip(kind, directory) for kind in CLIP_KINDS}


@pytest.fixture(scope="session")
def traits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every trait clip of :data:`raypipe.testing.TRAIT_CLIPS`, written once per session."""
    from raypipe.testing import make_trait_clip, trait_names

    directory = tmp_path_factory.mktemp("traits")
    return {name: make_trait_clip(name, directory) for name in trait_names()}


LOCAL_CPUS, LOCAL_GPUS = 8, 2
"""ray_local's logical resources: more CPUs than this machine's cores, and two GPUs."""

_local_ray: dict[str, str] = {}  # {"gcs": address} of the Ray ray_local started, while up
_ray_local_modules: set[str] = set()  # the modules whose tests use ray_local


def idle_worker_pids(root: int) -> set[int]:
    """The pids of the idle Ray worker processes (``ray::IDLE``) under process ``root``."""
    import psutil

    pids = set()
    for process in psutil.Process(root).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if process.cmdline()[:1] == ["ray::IDLE"]:
                pids.add(process.pid)
    return pids


def settled_idle_workers(
    root: int, before: AbstractSet[int] = frozenset(), wait_s: float = 60, at_least: int = 1
) -> set[int]:
    """:func:`idle_worker_pids` once ``at_least`` not in ``before`` have started and no more
    come (checked a second apart; what there is after ``wait_s``). A node starts its
    processes a few at a time: a check that took the first one alone missed the second,
    still starting (a run of two actors then found one)."""
    deadline, idle = time.monotonic() + wait_s, set()
    while time.monotonic() < deadline:
        idle, last = idle_worker_pids(root), idle
        if len(idle - before) >= at_least and idle == last:
            break
        time.sleep(1)
    return idle


def init_local_ray(**options: Any) -> None:
    """``ray.init`` of a new local Ray with :data:`LOCAL_CPUS` and :data:`LOCAL_GPUS`, no
    dashboard, worker logs kept from the test's output; ``options`` go to ``ray.init``."""
    import ray

    ray.init(
        address="local",
        num_cpus=LOCAL_CPUS,
        num_gpus=LOCAL_GPUS,
        include_dashboard=False,
        log_to_driver=False,
        **options,
    )


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A real local Ray with more logical CPUs than cores and two logical GPUs.

    One Ray serves the modules that use this fixture, which run one after the other
    (:func:`pytest_collection_modifyitems`). With a Ray of its own, each of them spent 6-8 s
    starting and shutting it down, and its first run waited for Ray Data's helper actors
    and new worker processes (a tiny archive's first run took 14 s, the next ones 4 s).
    A module that uses it gets a new Ray when that one is down, or when its resources are
    not all free within 10 s (an actor left over). Before a module that does not use it,
    it is shut down (:func:`pytest_runtest_setup`), so modules that build their own
    cluster, or run commands that start one, start from a clean slate as before."""
    import ray

    if not _local_ray_free(ray):
        if ray.is_initialized():
            ray.shutdown()
        init_local_ray()
        _local_ray["gcs"] = ray.get_runtime_context().gcs_address
    yield


@pytest.fixture
def no_ray() -> Iterator[None]:
    """No Ray connected before the test, and none left after it: a test that starts its
    own (raypipe's local Ray, or one of its user's) starts from a clean slate."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield
    if ray.is_initialized():
        ray.shutdown()


def _local_ray_free(ray: Any, wait_s: float = 10.0) -> bool:
    """Whether the Ray ray_local started is still up, this process's, and has all its
    logical CPUs and GPUs free (within ``wait_s``: the last module's actors end)."""
    if not _local_ray or not ray.is_initialized():
        return False
    if ray.get_runtime_context().gcs_address != _local_ray["gcs"]:
        return False
    deadline = time.monotonic() + wait_s
    while True:
        free = ray.available_resources()
        if free.get("CPU", 0) >= LOCAL_CPUS and free.get("GPU", 0) >= LOCAL_GPUS:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def _shut_local_ray() -> None:
    if _local_ray:
        _local_ray.clear()
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()


def _module_of(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """In each directory, the modules that use ``ray_local`` run first, one after the other
    and in their order, then the others in theirs (the sort is stable): one local Ray
    serves them all."""
    _ray_local_modules.clear()
    _ray_local_modules.update(_module_of(i) for i in items if "ray_local" in i.fixturenames)
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        first.setdefault(os.path.dirname(_module_of(item)), index)
    items.sort(
        key=lambda i: (
            first[os.path.dirname(_module_of(i))],
            _module_of(i) not in _ray_local_modules,
        )
    )


def model_frames(model: str, frames: np.ndarray) -> np.ndarray:
    """``model`` applied in-process, frame batch by frame batch, on the CPU."""
    from raypipe.infer.models import FrameModel, resolve_model

    data, _ = resolve_model(model)
    return FrameModel(data, device="cpu").run(frames, 4)


def assert_exact(source: Path, output: Path, model: str) -> None:
    """The invariants of one processed video against its source (DESIGN.md, invariant 1-3)."""
    assert_exact_to(source, output, lambda frames: model_frames(model, frames))


def assert_exact_to(
    source: Path, output: Path, expected_of: Callable[[np.ndarray], np.ndarray]
) -> None:
    """:func:`assert_exact` with the expected frames computed by ``expected_of(source frames)``
    (a processor, or a model with a spec, applied in-process). The source frames are those
    raypipe decodes (:func:`raypipe.testing.decode_upright`: the source's matrix, or BT.709
    for untagged HD), which :func:`decode_all` (FFmpeg's BT.601 default) is not for HD."""
    from raypipe.testing import (
        audio_packets,
        decode_upright,
        ffmpeg_decode_errors,
        start_offset_seconds,
    )

    src, src_pts, src_tb = decode_upright(source)
    out, out_pts, out_tb = decode_all(output)
    assert len(out_pts) == len(src_pts), f"{len(out_pts)} frames out, {len(src_pts)} in"
    rel_src = [Fraction(p - src_pts[0]) * src_tb for p in src_pts]
    rel_out = [Fraction(p - out_pts[0]) * out_tb for p in out_pts]
    assert rel_out == rel_src, "pts relative to the first frame differ"
    expected = expected_of(src)
    assert out.shape == expected.shape
    bad = [i for i in range(len(out)) if not np.array_equal(out[i], expected[i])]
    assert not bad, f"frames {bad[:10]} differ from what was applied to the source"
    assert [p[3] for p in audio_packets(output)] == [p[3] for p in audio_packets(source)]
    assert start_offset_seconds(output) == pytest.approx(start_offset_seconds(source), abs=1e-3)
    assert ffmpeg_decode_errors(output) == ""


CHUNK_SIZES = (1, 7, 13, 1000)  # one frame, small, a prime, larger than any clip


def chunk_config(frames: int) -> ChunkConfig:
    return ChunkConfig(chunk_frames=frames)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


class _Handler(__import__("http.server").server.SimpleHTTPRequestHandler):
    """Serves a directory; any path containing 'private' answers 403 Forbidden."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if "private" in self.path:
            self.send_error(403)
            return
        super().do_GET()

    def do_HEAD(self) -> None:  # noqa: N802
        if "private" in self.path:
            self.send_error(403)
            return
        super().do_HEAD()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server on 127.0.0.1 serving a fresh directory: (directory, base URL)."""
    import functools
    import http.server
    import threading

    root = tmp_path / "http"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def closed_port() -> int:
    """A TCP port on 127.0.0.1 with nothing listening (connections are refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmallDisk:
    """A 1 MiB tmpfs mounted at ``path`` (:func:`small_disk`): a real file system that fills."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fill(self) -> None:
        """Take every free byte (unbuffered writes until the disk says it is full)."""
        import errno

        fd = os.open(self.path / ".filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        finally:
            os.close(fd)

    def names(self) -> list[str]:
        """What is on it, besides the filler: every path, relative."""
        return sorted(
            str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.name != ".filler"
        )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A 1 MiB tmpfs of its own (a disk that fills for real), unmounted after; skipped
    where this process may not mount one (not root, no CAP_SYS_ADMIN)."""
    path = tmp_path / "disk"
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
