"""The object store of the local Ray a run starts, sized from the video's chunks and the
model's output size (:func:`raypipe.distributed.setup.size_local_store`): what it is sized
from, when it is left to Ray, a real run on a store sized so (and Ray Data's share of it),
and on one too small."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
from conftest import assert_exact, lossless_options

ray = pytest.importorskip("ray")

import raypipe  # noqa: E402
from raypipe.config import RunConfig, RuntimeConfig, build_run_config  # noqa: E402
from raypipe.distributed.cluster import (  # noqa: E402
    STORE_FLOOR_BYTES,
    connect,
    local_cpus,
    ray_default_store_bytes,
)
from raypipe.distributed.dataset import DATA_SHARE_ENV, SIZED_STORE_DATA_FRACTION  # noqa: E402
from raypipe.distributed.setup import (  # noqa: E402
    chunk_bytes,
    load_run,
    model_facts,
    size_local_store,
)
from raypipe.testing import ClipSpec, make_clip  # noqa: E402

H, W, FRAMES = 720, 1280, 60
RGB_CHUNK = FRAMES * H * W * 3  # 165.9 MB


def _sized(cfg: RunConfig, frames: int = FRAMES) -> int | None:
    model = load_run(cfg)
    return size_local_store(
        cfg, model, height=H, width=W, max_frames=frames
    ).runtime.local_object_store_bytes


@pytest.mark.parametrize(
    ("model", "chunk", "scale"),
    [
        ("builtin:identity", 2 * RGB_CHUNK, 1.0),  # the frames in and as many out
        ("builtin:upscale2x", 5 * RGB_CHUNK, 2.0),  # 4x the pixels out
        ("builtin:phash", RGB_CHUNK, 0.0),  # analysis: a few bytes a frame out
        # temporal: left to Ray; its output's size not known (planned as its input's)
        ("builtin:ema", None, None),
    ],
)
def test_a_chunks_bytes(model: str, chunk: int | None, scale: float | None) -> None:
    loaded = load_run(build_run_config(model=model))
    assert chunk_bytes(loaded, height=H, width=W, frames=FRAMES) == chunk
    assert model_facts(loaded).output_scale == scale


def test_an_upscalers_chunks_are_planned_with_its_output(no_ray: None, tmp_path: Path) -> None:
    """``chunk_mib`` counts a chunk's frames as the model outputs them too."""
    clip = make_clip(tmp_path / "in.mp4", ClipSpec(width=64, height=48, n_frames=24, gop=8))
    # a 64x48 frame is 9 KiB as RGB, 45 KiB in and 4x out: 0.2 MiB holds 4 (11 in and out
    # of the same size, so GOPs of 8 whole)
    stats, out = tmp_path / "stats.json", tmp_path / "out.mkv"
    raypipe.process_video(
        str(clip), str(out), model="builtin:upscale2x", chunk_mib=0.2, local_num_cpus=4,
        stats_path=str(stats), quiet=True, **lossless_options(),
    )  # fmt: skip
    chunks = json.loads(stats.read_text())["chunks"]
    assert sorted(c["n_frames"] for c in chunks) == [4] * 6
    assert_exact(clip, out, "builtin:upscale2x")
    # A decode task goes on with the decoder its process's last chunk left where that
    # chunk ended at or after this one's keyframe (frame 8k for chunks 2k and 2k+1) and
    # not after its start: never seeking back to the keyframe for the GOP's second half.
    last: dict[int, int] = {}  # process -> index of the chunk it decoded last
    for c in sorted(chunks, key=lambda c: c["decode_start"]):
        i, before = c["index"], last.get(c["decode_pid"])
        follows = before is not None and 8 * (i // 2) <= 4 * (before + 1) <= 4 * i
        assert c["decode_carried"] is follows, (i, before)
        last[c["decode_pid"]] = i


def test_a_720p_identity_run_gets_eight_chunks_in_and_out(no_ray: None) -> None:
    cfg = build_run_config(model="builtin:identity", local_num_cpus=4)
    # 4 CPU slots + 2 calls in flight on the actor + 2 queued, each 60 frames in and out
    expected = min(8 * 2 * RGB_CHUNK, ray_default_store_bytes())
    assert _sized(cfg) == expected
    assert expected < 3 * 2**30  # against Ray's 30% of this 24 GB machine's memory


def test_more_cpus_and_workers_more_chunks(no_ray: None) -> None:
    cfg = build_run_config(model="builtin:identity", local_num_cpus=6, workers=2)
    assert _sized(cfg, frames=8) == max(STORE_FLOOR_BYTES, (6 + 4 + 2) * 2 * 8 * H * W * 3)


def test_small_videos_get_the_floor_and_large_ones_at_most_rays_default(
    no_ray: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ray's default follows the memory free at each call: one reading for both sides, or
    # the comparison races the machine (7416679219 against 7417962086 bytes, seen in CI)
    from ray._private import utils

    free = utils.estimate_available_memory()
    monkeypatch.setattr(utils, "estimate_available_memory", lambda: free)
    cfg = build_run_config(model="builtin:identity", local_num_cpus=4)
    assert _sized(cfg, frames=2) == STORE_FLOOR_BYTES
    assert _sized(cfg, frames=2000) == ray_default_store_bytes()


@pytest.mark.parametrize(
    "options",
    [
        {"local_object_store_bytes": 3 * 2**30},  # given: kept
        {"address": "127.0.0.1:6379"},  # not a local Ray
        {"model": "builtin:ema"},  # output size unknown
        {"processor": "raypipe.examples.processors:Redact"},
    ],
)
def test_left_as_given_or_to_ray(no_ray: None, options: dict[str, object]) -> None:
    cfg = build_run_config(**{"model": "builtin:identity", **options})
    assert _sized(cfg) == options.get("local_object_store_bytes")


def test_rays_own_proportion_in_the_environment_wins(
    no_ray: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION", "0.2")
    assert _sized(build_run_config(model="builtin:identity")) is None


@pytest.fixture
def ray_data_seen(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[float]]:
    """The share of the object store each Ray Data execution in this process was given
    ("share") and how long its scheduling loop waited for a task each round ("wait")."""
    from ray.data._internal.execution import streaming_executor_state as state
    from ray.data._internal.execution.resource_manager import ResourceManager

    seen: dict[str, set[float]] = {"share": set(), "wait": set()}
    init, update = ResourceManager.__init__, ResourceManager.update_usages

    def made(self: ResourceManager, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)
        seen["share"].add(self._object_store_memory_limit_fraction)

    def round_(self: ResourceManager) -> None:
        seen["wait"].add(state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S)
        update(self)

    monkeypatch.setattr(ResourceManager, "__init__", made)
    monkeypatch.setattr(ResourceManager, "update_usages", round_)
    return seen


def test_a_run_on_a_new_local_ray_gets_its_store_and_ray_data_most_of_it(
    no_ray: None, tmp_path: Path, ray_data_seen: dict[str, set[float]]
) -> None:
    """Ray Data may fill more of the store raypipe sized for the run's chunks than its
    default half (which held the stages to one chunk at a time), at Ray's own scheduling
    pace; the process's Ray Data defaults are left as they were."""
    from ray.data._internal.execution import streaming_executor_state as state

    wait = state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S
    clip = make_clip(tmp_path / "in.mp4", ClipSpec(width=64, height=48, n_frames=24, gop=8))
    out = tmp_path / "out.mkv"
    raypipe.process_video(
        str(clip), str(out), model="builtin:identity", local_num_cpus=4, quiet=True,
        **lossless_options(),
    )  # fmt: skip
    assert ray.cluster_resources()["object_store_memory"] == STORE_FLOOR_BYTES
    assert ray_data_seen == {"share": {SIZED_STORE_DATA_FRACTION}, "wait": {wait}}, ray_data_seen
    assert 0.5 < SIZED_STORE_DATA_FRACTION <= 1.0  # more than Ray Data's default half
    assert ray.data.DataContext.get_current().override_object_store_memory_limit_fraction is None
    assert_exact(clip, out, "builtin:identity")


def test_a_store_raypipe_did_not_size_keeps_ray_datas_share(
    no_ray: None, tmp_path: Path, ray_data_seen: dict[str, set[float]]
) -> None:
    """On a Ray started without a size (here: a given ``connect``; likewise ``--address``,
    archives), the store is not the run's to give away: Ray Data keeps its default half."""
    assert connect(RuntimeConfig(local_num_cpus=4))
    clip = make_clip(tmp_path / "in.mp4", ClipSpec(width=64, height=48, n_frames=24, gop=8))
    raypipe.process_video(
        str(clip), str(tmp_path / "out.mkv"), model="builtin:identity", quiet=True,
        **lossless_options(),
    )  # fmt: skip
    from ray.data._internal.execution.resource_manager import ResourceManager

    assert ray_data_seen["share"] == {ResourceManager.DEFAULT_OBJECT_STORE_MEMORY_LIMIT_FRACTION}
    assert ResourceManager.DEFAULT_OBJECT_STORE_MEMORY_LIMIT_FRACTION == 0.5  # Ray's half


def test_a_run_on_a_smaller_sized_store_warns_and_is_exact(
    no_ray: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = RuntimeConfig(local_num_cpus=4, local_object_store_bytes=100 * 2**20)
    assert connect(runtime)
    assert ray.cluster_resources()["object_store_memory"] == 100 * 2**20
    # 8 x (48 frames of 320x240 in and out) = 177 MB wanted, chunks of 11 MB
    clip = make_clip(tmp_path / "in.mp4", ClipSpec(width=320, height=240, n_frames=48, gop=48))
    out = tmp_path / "out.mkv"
    cfg = dataclasses.replace(build_run_config(**lossless_options()), runtime=runtime)
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        raypipe.process_video(str(clip), str(out), cfg, chunk_frames=48, quiet=True)
    warnings = [r.getMessage() for r in caplog.records if "object store" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "0.1 GiB object store" in warnings[0] and "0.2 GiB" in warnings[0], warnings
    assert_exact(clip, out, "builtin:identity")
    # a run that fits says nothing
    caplog.clear()
    small = make_clip(tmp_path / "small.mp4", ClipSpec(width=64, height=48, n_frames=24, gop=8))
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        raypipe.process_video(str(small), str(tmp_path / "small.mkv"), cfg, quiet=True)
    assert not [r for r in caplog.records if "object store" in r.getMessage()]
    assert local_cpus(runtime) == 4


def test_a_connected_ray_raypipe_did_not_size_costs_no_graph_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A served or submitted run's Ray was not started by this process with a size: the
    model's graph is not read for the warning (a service's start time)."""
    import raypipe.distributed.cluster as cluster
    import raypipe.distributed.setup as setup

    def unread(*_: object, **__: object) -> None:
        raise AssertionError("the graph was read")

    cfg = build_run_config(model="builtin:identity")
    model = load_run(cfg)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(cluster, "_local_ray", None)
    monkeypatch.setattr(setup, "chunk_bytes", unread)
    assert size_local_store(cfg, model, height=H, width=W, max_frames=FRAMES) is cfg


def test_ray_datas_own_share_in_the_environment_wins(
    no_ray: None, tmp_path: Path, ray_data_seen: dict[str, set[float]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Ray Data read the variable when it was imported; raypipe then leaves the share to it
    (benchmarks/store.py's ``--data-shares`` sides)."""
    from ray.data._internal.execution.resource_manager import ResourceManager

    monkeypatch.setenv(DATA_SHARE_ENV, "0.5")
    clip = make_clip(tmp_path / "in.mp4", ClipSpec(width=64, height=48, n_frames=24, gop=8))
    raypipe.process_video(
        str(clip), str(tmp_path / "out.mkv"), model="builtin:identity", quiet=True,
        local_num_cpus=4, **lossless_options(),
    )  # fmt: skip
    assert ray.cluster_resources()["object_store_memory"] == STORE_FLOOR_BYTES  # sized
    assert ray_data_seen["share"] == {ResourceManager.DEFAULT_OBJECT_STORE_MEMORY_LIMIT_FRACTION}
