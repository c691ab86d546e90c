"""A run on the local Ray raypipe started takes the node's resources from the start, without
Ray Data's autoscaling coordinator actor (:mod:`raypipe.distributed.fixed_cluster`); every
other dataset, and every run on a Ray raypipe did not start, keeps Ray Data's default.
Connected to that local Ray, Ray Data also runs without its stats actor and its actor
location tracker; connected to any other, with them. Its video is assembled by the driver
(no Ray task: :mod:`raypipe.distributed.assembly`); on any other Ray, by a task."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_exact, lossless_options

ray = pytest.importorskip("ray")

import raypipe  # noqa: E402
from raypipe.distributed import fixed_cluster  # noqa: E402
from raypipe.distributed.stats import RunStats  # noqa: E402
from raypipe.testing import ClipSpec, ffprobe_video, make_clip, make_trait_clip  # noqa: E402

COORDINATOR = ("AutoscalingCoordinator", "AutoscalingCoordinator")  # Ray Data's name, namespace
HELPERS = (  # Ray Data's other detached actors: name, namespace
    ("datasets_stats_actor", "_dataset_stats_actor"),
    ("ActorLocationTracker", "ActorLocationTracker"),
)


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


def _exists(name: str, namespace: str) -> bool:
    try:
        ray.get_actor(name, namespace=namespace)
    except ValueError:
        return False
    return True


def _coordinator_exists() -> bool:
    return _exists(*COORDINATOR)


def _helpers() -> list[bool]:
    return [_exists(*helper) for helper in HELPERS]


def _run(tmp_path: Path, name: str) -> tuple[Path, Path, RunStats]:
    clip = make_clip(tmp_path / f"{name}.mp4", ClipSpec(width=64, height=48, n_frames=24, gop=8))
    out = tmp_path / f"{name}.mkv"
    stats = raypipe.process_video(
        str(clip), str(out), model="builtin:identity", local_num_cpus=4, quiet=True,
        **lossless_options(),
    )  # fmt: skip
    return clip, out, stats


def test_a_run_on_its_own_local_ray_has_its_resources_at_once(
    no_ray: None, tmp_path: Path, totals: list[Any]
) -> None:
    clip, out, stats = _run(tmp_path, "own")
    assert stats.assembly["in_driver"] is True
    assert totals, "the run's executor did not get the fixed cluster"
    resources = ray.cluster_resources()
    total = totals[0]
    assert (total.cpu, total.gpu) == (resources["CPU"], resources.get("GPU", 0))
    assert total.object_store_memory == resources["object_store_memory"]
    assert not _coordinator_exists()
    assert _helpers() == [False, False]
    assert_exact(clip, out, "builtin:identity")
    # a dataset raypipe did not mark, on the same Ray, keeps Ray Data's own autoscaler
    seen = len(totals)
    assert ray.data.range(4).map_batches(lambda b: b).count() == 4
    assert len(totals) == seen
    assert _coordinator_exists()
    # but on this Ray, as every dataset, runs without the helpers: one node, no dashboard

    class _AddOne:  # a user's class, run in an actor pool (its workers get the tracker)
        def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
            return {"id": batch["id"] + 1}

    pooled = ray.data.range(6).map_batches(_AddOne, concurrency=1, num_cpus=0.5)
    assert sorted(row["id"] for row in pooled.take_all()) == list(range(1, 7))
    assert _helpers() == [False, False]
    # a next run with device='gpu' on this local Ray of a machine without a GPU: told what
    # the machine lacks, not to `ray start --num-gpus` (a notebook's second run; a sweep)
    from raypipe.infer.provider_check import check_gpu_stack

    if check_gpu_stack().device_problem("gpu"):
        with pytest.raises(raypipe.DeviceUnavailableError, match="no GPU that ONNX Runtime"):
            raypipe.process_video(str(clip), str(tmp_path / "gpu.mkv"), device="gpu", quiet=True)


def test_a_ray_raypipe_did_not_start_keeps_ray_datas_autoscaler(
    no_ray: None, tmp_path: Path, totals: list[Any]
) -> None:
    ray.init(address="local", num_cpus=4, include_dashboard=False)  # the user's, may grow
    clip, out, stats = _run(tmp_path, "theirs")
    # one node, the driver's: the driver assembles, as on its own Ray (no task to wait for)
    assert stats.assembly["in_driver"] is True
    assert stats.assembly["seconds"] > 0
    assert not totals
    assert _coordinator_exists()
    assert _helpers() == [True, True]  # Ray Data's own
    assert_exact(clip, out, "builtin:identity")


def test_the_driver_that_assembles_says_what_was_left_out_once(
    no_ray: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The media layer's warnings, which a task's log would keep from the user, are said
    once, with the output's name, when the driver assembles itself; the output is whole."""
    source = make_trait_clip("rotated_languages", tmp_path)
    out = tmp_path / "out.mkv"
    with caplog.at_level(logging.WARNING):
        stats = raypipe.process_video(
            str(source), str(out), model="builtin:identity", local_num_cpus=4, quiet=True
        )
    assert stats.assembly["in_driver"] is True
    said = [r.getMessage() for r in caplog.records if "cannot go into" in r.getMessage()]
    assert said == [
        "out.mkv: subtitle stream 3 (mov_text) cannot go into a matroska file as it is and "
        "is converted to ass"
    ]
    probed = ffprobe_video(out)
    assert [s.kind for s in probed.streams].count("audio") == 2
    assert [(s.kind, s.codec, s.language) for s in probed.streams if s.kind == "subtitle"] == [
        ("subtitle", "ass", "deu")
    ]
    assert probed.n_packets == stats.frames == ffprobe_video(source).n_packets


def test_a_ray_data_without_the_hook_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.data._internal.execution import streaming_executor

    monkeypatch.setattr(fixed_cluster, "_installed", None)
    monkeypatch.delattr(streaming_executor, "create_cluster_autoscaler")
    context = ray.data.DataContext()
    assert fixed_cluster.use_fixed_cluster(context) is False
    assert context.get_config(fixed_cluster.FIXED_CLUSTER_KEY) is None


def test_a_ray_data_without_a_helper_lookup_keeps_its_helpers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ray.data._internal import stats
    from ray.data._internal.execution.operators import actor_pool_map_operator as pool

    stats_actor = stats.get_or_create_stats_actor
    tracker = pool.get_or_create_actor_location_tracker
    monkeypatch.delattr(pool, "get_actor_locations")
    assert fixed_cluster._hook_helpers() is False
    assert stats.get_or_create_stats_actor is stats_actor
    assert pool.get_or_create_actor_location_tracker is tracker


def test_unheard_drops_every_call_and_pickles() -> None:
    import pickle

    unheard = pickle.loads(pickle.dumps(fixed_cluster.UNHEARD))
    assert unheard.update_actor_location.remote("id", "node") is None
    assert unheard.register_dataset.options(name="x").remote(1, k=2) is None
    with pytest.raises(AttributeError):
        unheard.__wrapped__  # noqa: B018 - dunders are not methods of an actor
