"""Two Ray nodes on one machine (ray.cluster_utils.Cluster): chunks run on both, output exact
(temporal models too: their context frames come from chunks that may run on the other node);
with the output on object storage (moto's S3 server), segments go there from the encode
tasks and the video is assembled by a Ray task, not by the driver."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import ray
from conftest import assert_exact, lossless_options
from holds import inference_held
from ray.cluster_utils import Cluster
from temporal_checks import (
    assert_timing_and_streams,
    chunk_starts,
    source_frames,
    temporal_clips,  # noqa: F401 - fixture
)

import raypipe
from raypipe.distributed.chunk_task import SEGMENT_SUFFIX
from raypipe.distributed.planning import work_dir_for
from raypipe.faults import HOLD_ENV, RECORD_ENV, attempt_of
from raypipe.media.probe import make_video_id
from raypipe.testing.s3 import S3, moto_s3
from raypipe.testing.temporal import sequential_frames


@pytest.fixture(scope="module")
def s3() -> Iterator[S3 | None]:
    """moto's S3 server, started before the nodes so their workers inherit its endpoint
    and credentials (``None`` without moto/s3fs: the S3 test skips)."""
    try:
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError:
        yield None
        return
    with moto_s3("bucket") as server:
        yield server


@pytest.fixture(scope="module")
def attempts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every fault hook reached records itself here (raypipe.faults), in every process; a
    node whose id names a file in ``holds`` (the directory next to it) holds its work."""
    path = tmp_path_factory.mktemp("attempts")
    holds = tmp_path_factory.mktemp("holds")
    os.environ[RECORD_ENV], os.environ[HOLD_ENV] = str(path), str(holds)
    yield path
    os.environ.pop(RECORD_ENV, None)
    os.environ.pop(HOLD_ENV, None)


@contextmanager
def inference_held_until_both_nodes_infer(attempts: Path) -> Iterator[list[str]]:
    """Inference waits on each node until both nodes have begun it, so that both certainly
    infer (tests/holds.py says why a short clip needs it)."""
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    with inference_held(
        attempts,
        Path(os.environ[HOLD_ENV]),
        lambda inferred: {a.node for a in inferred} == nodes,
        "both nodes began inference",
    ) as report:
        yield report


@pytest.fixture(scope="module")
def two_nodes(s3: S3 | None, attempts: Path) -> Iterator[Cluster]:
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "num_gpus": 1})
    cluster.add_node(num_cpus=4, num_gpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_chunks_run_on_both_nodes_and_output_is_exact(
    two_nodes: Cluster, attempts: Path, clips: dict[str, Path], tmp_path: Path
) -> None:
    out, stats_path = tmp_path / "out.mp4", tmp_path / "stats.json"
    with inference_held_until_both_nodes_infer(attempts) as hold:
        raypipe.process_video(
            str(clips["open_gop"]),
            str(out),
            model="builtin:sharpen",
            chunk_frames=4,
            **lossless_options(),
            stats_path=str(stats_path),
            quiet=True,
        )
    chunks = json.loads(stats_path.read_text())["chunks"]
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2
    assert {c["infer_node"] for c in chunks} == nodes, f"inference did not use both nodes: {hold}"
    assert len({c["actor_id"] for c in chunks}) == 2
    assert_exact(clips["open_gop"], out, "builtin:sharpen")


def test_segments_on_object_storage_and_assembly_off_the_driver(
    two_nodes: Cluster, s3: S3 | None, attempts: Path, clips: dict[str, Path], tmp_path: Path
) -> None:
    if s3 is None:
        pytest.skip("needs moto[server] and s3fs")
    source = clips["bframes_aac"]
    output = "s3://bucket/out/video.mp4"
    stats = raypipe.process_video(
        str(source), output, model="builtin:invert", chunk_frames=6, **lossless_options(),
        quiet=True,
    )  # fmt: skip
    local = tmp_path / "video.mp4"
    s3.fs.get("bucket/out/video.mp4", str(local))
    assert_exact(source, local, "builtin:invert")  # audio included
    # every segment was PUT into the work directory on S3 (by the encode tasks: the driver
    # never sees their bytes), and the work directory is gone
    work_key = work_dir_for(output).removeprefix("s3://")
    puts = {r.split()[1] for r in s3.requests if r.startswith("PUT ") and SEGMENT_SUFFIX in r}
    assert len({p for p in puts if p.startswith(f"/{work_key}/")}) == stats.chunks > 1
    assert not s3.fs.exists(work_key)
    assert all(c["encode_pid"] not in (0, os.getpid()) for c in stats.chunk_stats)
    # assembly ran once, in a Ray worker process on one of the nodes, not in the driver
    video_id = make_video_id(str(source))
    records = map(attempt_of, os.listdir(attempts))
    runs = [(a.node, a.pid) for a in records if (a.key, a.stage) == (video_id, "assembly")]
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(runs) == 1
    node, pid = runs[0]
    assert node in nodes and pid != os.getpid()
    assert stats.assembly["in_driver"] is False


@pytest.mark.parametrize(
    ("model", "kind", "chunk_frames"),
    [("denoise3", "open_gop", 4), ("ema", "single_keyframe", 4), ("interp2x", "vfr", 3)],
)
def test_temporal_models_on_both_nodes_equal_the_whole_video(
    two_nodes: Cluster,
    attempts: Path,
    temporal_clips: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    model: str,
    kind: str,
    chunk_frames: int,
) -> None:
    """Issue 13: a chunk's context comes from its neighbours wherever they run; the
    windowed, recurrent (warm-up 8) and interpolating built-ins give what the whole video
    gives in one piece, with chunks inferred on both nodes (each node's inference held until
    both have begun: these clips have few chunks and the models are fast)."""
    source, out, stats_path = temporal_clips[kind], tmp_path / "out.mp4", tmp_path / "stats.json"
    with inference_held_until_both_nodes_infer(attempts) as hold:
        raypipe.process_video(
            str(source),
            str(out),
            model=f"builtin:{model}",
            chunk_frames=chunk_frames,
            **lossless_options(),
            stats_path=str(stats_path),
            quiet=True,
        )
    chunks = json.loads(stats_path.read_text())["chunks"]
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert {c["infer_node"] for c in chunks} == nodes, f"inference did not use both nodes: {hold}"
    interpolate = 2 if model == "interp2x" else 1
    got = assert_timing_and_streams(source, out, interpolate=interpolate)
    expected = sequential_frames(f"builtin:{model}", source_frames(source))
    if model == "ema":  # exact on the first chunk, within a level after a warm-up
        first_end = chunk_starts(source, chunk_frames)[1]
        assert np.array_equal(got[:first_end], expected[:first_end])
        assert np.abs(got.astype(int) - expected).max() <= 1
    else:
        assert np.array_equal(got, expected)
