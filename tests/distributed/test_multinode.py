"""Two Ray nodes on one machine (ray.cluster_utils.Cluster): chunks run on both, output exact."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from conftest import assert_exact, lossless_options
from ray.cluster_utils import Cluster

import raypipe


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
