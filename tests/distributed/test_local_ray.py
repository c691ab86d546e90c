"""The local Ray raypipe starts for a run, and the cluster image, free dead objects quickly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from raypipe.config import RuntimeConfig  # noqa: E402
from raypipe.distributed.cluster import RAYLET_CONFIG, connect  # noqa: E402

DOCKERFILE = Path(__file__).resolve().parents[2] / "cluster" / "Dockerfile"


def test_the_local_ray_gets_raypipes_raylet_config() -> None:
    if ray.is_initialized():
        ray.shutdown()
    try:
        assert connect(RuntimeConfig(local_num_cpus=2)) is True
        # The system config the local raylet was started with (Ray keeps it on the node).
        config = ray._private.worker._global_node._config
        for key, value in RAYLET_CONFIG.items():
            assert config.get(key) == value, key
    finally:
        ray.shutdown()


def test_the_cluster_image_sets_the_same_raylet_config() -> None:
    """Cluster nodes read it from RAY_<name> in the environment of `ray start`."""
    env = dict(re.findall(r"^ENV RAY_(\w+)=(\S+)$", DOCKERFILE.read_text(), re.M))
    assert {k: int(v) for k, v in env.items() if k in RAYLET_CONFIG} == RAYLET_CONFIG
