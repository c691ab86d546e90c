"""Two Ray nodes on one machine (ray.cluster_utils.Cluster): chunks run on both, output exact
(temporal models too: their context frames come from chunks that may run on the other node)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
from conftest import assert_exact, lossless_options
from ray.cluster_utils import Cluster
from temporal_checks import (
    assert_timing_and_streams,
    chunk_starts,
    source_frames,
    temporal_clips,  # noqa: F401 - fixture
)

import raypipe
from raypipe.testing.temporal import sequential_frames


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[Cluster]:
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
    two_nodes: Cluster, clips: dict[str, Path], tmp_path: Path
) -> None:
    out, stats_path = tmp_path / "out.mp4", tmp_path / "stats.json"
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
    assert {c["infer_node"] for c in chunks} == nodes, "inference did not use both nodes"
    assert len({c["actor_id"] for c in chunks}) == 2
    assert_exact(clips["open_gop"], out, "builtin:sharpen")


@pytest.mark.parametrize(
    ("model", "kind", "chunk_frames"),
    [("denoise3", "open_gop", 4), ("ema", "single_keyframe", 4), ("interp2x", "vfr", 3)],
)
def test_temporal_models_on_both_nodes_equal_the_whole_video(
    two_nodes: Cluster,
    temporal_clips: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    model: str,
    kind: str,
    chunk_frames: int,
) -> None:
    """Issue 13: a chunk's context comes from its neighbours wherever they run; the
    windowed, recurrent (warm-up 8) and interpolating built-ins give what the whole video
    gives in one piece, with chunks inferred on both nodes. These clips have few chunks and
    the models are fast, so the test has Ray Data wait for both actors before it hands out
    the first chunk (else the first actor up may take them all on a busy machine)."""
    monkeypatch.setattr(ray.data.DataContext.get_current(), "wait_for_min_actors_s", 300)
    source, out, stats_path = temporal_clips[kind], tmp_path / "out.mp4", tmp_path / "stats.json"
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
    assert {c["infer_node"] for c in chunks} == {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    interpolate = 2 if model == "interp2x" else 1
    got = assert_timing_and_streams(source, out, interpolate=interpolate)
    expected = sequential_frames(f"builtin:{model}", source_frames(source))
    if model == "ema":  # exact on the first chunk, within a level after a warm-up
        first_end = chunk_starts(source, chunk_frames)[1]
        assert np.array_equal(got[:first_end], expected[:first_end])
        assert np.abs(got.astype(int) - expected).max() <= 1
    else:
        assert np.array_equal(got, expected)
