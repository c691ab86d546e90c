"""A run on the local Ray raypipe started takes the node's resources from the start, without
Ray Data's autoscaling coordinator actor (:mod:`raypipe.distributed.fixed_cluster`); every
other dataset, and every run on a Ray raypipe did not start, keeps Ray Data's default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import assert_exact, lossless_options

ray = pytest.importorskip("ray")

import raypipe  # noqa: E402
from raypipe.distributed import fixed_cluster  # noqa: E402
from raypipe.testing import ClipSpec, make_clip  # noqa: E402

COORDINATOR = ("AutoscalingCoordinator", "AutoscalingCoordinator")  # Ray Data's name, namespace


@pytest.fixture
def totals(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The totals each executor got from a :class:`FixedCluster`, as its resource manager
    asked for them."""
    seen: list[Any] = []
    get = fixed_cluster.FixedCluster.get_total_resources

    def recorded(self: fixed_cluster.FixedCluster) -> Any:
        seen.append(get(self))
        return seen[-1]

    monkeypatch.setattr(fixed_cluster.FixedCluster, "get_total_resources", recorded)
    return seen


def _coordinator_exists() -> bool:
    name, namespace = COORDINATOR
    try:
        ray.get_actor(name, namespace=namespace)
    except ValueError:
        return False
    return True


def _run(tmp_path: Path, name: str) -> tuple[Path, Path]:
    clip = make_clip(tmp_path / f"{name}.mp4", ClipSpec(width=64, height=48, n_frames=24, gop=8))
    out = tmp_path / f"{name}.mkv"
    raypipe.process_video(
        str(clip), str(out), model="builtin:identity", local_num_cpus=4, quiet=True,
        **lossless_options(),
    )  # fmt: skip
    return clip, out


def test_a_run_on_its_own_local_ray_has_its_resources_at_once(
    no_ray: None, tmp_path: Path, totals: list[Any]
) -> None:
    clip, out = _run(tmp_path, "own")
    assert totals, "the run's executor did not get the fixed cluster"
    resources = ray.cluster_resources()
    total = totals[0]
    assert (total.cpu, total.gpu) == (resources["CPU"], resources.get("GPU", 0))
    assert total.object_store_memory == resources["object_store_memory"]
    assert not _coordinator_exists()
    assert_exact(clip, out, "builtin:identity")
    # a dataset raypipe did not mark, on the same Ray, keeps Ray Data's own autoscaler
    seen = len(totals)
    assert ray.data.range(4).map_batches(lambda b: b).count() == 4
    assert len(totals) == seen
    assert _coordinator_exists()


def test_a_ray_raypipe_did_not_start_keeps_ray_datas_autoscaler(
    no_ray: None, tmp_path: Path, totals: list[Any]
) -> None:
    ray.init(address="local", num_cpus=4, include_dashboard=False)  # the user's, may grow
    clip, out = _run(tmp_path, "theirs")
    assert not totals
    assert _coordinator_exists()
    assert_exact(clip, out, "builtin:identity")


def test_a_ray_data_without_the_hook_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.data._internal.execution import streaming_executor

    monkeypatch.setattr(fixed_cluster, "_installed", None)
    monkeypatch.delattr(streaming_executor, "create_cluster_autoscaler")
    context = ray.data.DataContext()
    assert fixed_cluster.use_fixed_cluster(context) is False
    assert context.get_config(fixed_cluster.FIXED_CLUSTER_KEY) is None
