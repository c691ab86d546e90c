"""Fused stages (``--stages``, raypipe.distributed.fused): actors on the CPU decode, run
and encode each chunk in their own process, exact as the split pipeline, for image,
temporal and analysis models; ``fused`` on GPU actors too. On the module's local Ray
(8 logical CPUs, two logical GPUs)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
from conftest import assert_exact, lossless_options
from temporal_checks import (
    assert_timing_and_streams,
    source_frames,
    temporal_clips,  # noqa: F401 - fixture
)

import raypipe
from raypipe.config import EncodeConfig, ModelConfig, RunConfig, RuntimeConfig
from raypipe.distributed.actors import InferActor
from raypipe.distributed.cluster import ActorPlan, fuse_stages, plan_actors
from raypipe.distributed.dataset import LANE_CHUNKS, fused_lanes, lane_rows
from raypipe.distributed.fused import ChunkActor
from raypipe.distributed.planning import PlannedVideo, VideoJob
from raypipe.distributed.setup import load_model
from raypipe.distributed.workload import ActorJob
from raypipe.errors import ConfigError
from raypipe.media import make_video_id
from raypipe.testing import ClipSpec, make_clip
from raypipe.testing.temporal import sequential_frames


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_local: None) -> None:
    return None


def _run(source: Path, out: Path, tmp_path: Path, **options: object) -> dict:
    stats = tmp_path / f"{out.name}.stats.json"
    raypipe.process_video(
        str(source), str(out), stats_path=str(stats), quiet=True, **lossless_options(), **options
    )
    doc: dict = json.loads(stats.read_text())
    return doc


def _one_process_per_chunk(doc: dict) -> bool:
    return all(c["decode_pid"] == c["infer_pid"] == c["encode_pid"] for c in doc["chunks"])


def test_cpu_actors_fuse_the_stages_and_stay_exact(clips: dict[str, Path], tmp_path: Path) -> None:
    source = clips["bframes_aac"]
    options: dict[str, object] = dict(model="builtin:invert", chunk_frames=7, device="cpu")
    fused = _run(source, tmp_path / "fused.mp4", tmp_path, **options)
    assert fused["totals"]["workers"] == 4  # one actor per two of the 8 logical CPUs
    assert len(fused["chunks"]) >= 4 and _one_process_per_chunk(fused)
    assert len({c["infer_pid"] for c in fused["chunks"]}) >= 2  # the chunks were spread
    assert_exact(source, tmp_path / "fused.mp4", "builtin:invert")

    split = _run(source, tmp_path / "split.mp4", tmp_path, stages="split", **options)
    assert split["totals"]["workers"] == 1  # one CPU actor, decode and encode in tasks
    assert all(c["decode_pid"] != c["infer_pid"] for c in split["chunks"])
    assert all(c["encode_pid"] != c["infer_pid"] for c in split["chunks"])
    assert_exact(source, tmp_path / "split.mp4", "builtin:invert")


def test_a_lossy_output_is_the_split_pipelines_to_the_bit(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    """The fused actor's encoder runs the encode task's threads: x264 codes the same
    packets (with another thread count it codes frames this tall differently), so a resume
    may mix both's segments."""
    source, packets = tmp_path / "source.mp4", {}
    make_clip(source, ClipSpec(n_frames=24, width=640, height=360, gop=12))
    for stages in ("fused", "split"):
        out = tmp_path / f"{stages}.mp4"
        raypipe.process_video(
            str(source), str(out), model="builtin:sharpen", chunk_frames=7, device="cpu",
            stages=stages, quiet=True, codec="libx264", crf=28, preset="veryfast",
        )  # fmt: skip
        with av.open(str(out)) as container:
            packets[stages] = [(p.pts, p.dts, bytes(p)) for p in container.demux(video=0) if p.size]
    assert len(packets["fused"]) == 24 and packets["fused"] == packets["split"]


def test_a_split_gop_goes_through_the_actors_in_lanes(tmp_path: Path) -> None:
    """One long GOP in 8 chunks on 4 fused actors: 4 lanes of 2 consecutive chunks, each
    lane on one actor whose decoder goes on from its first chunk to its second (one
    pre-roll per lane, not one per chunk); the output is exact. Which actor takes which
    lane is Ray Data's: an actor up first that has finished a lane takes the next one
    waiting (its decoder may then go on into it too)."""
    source, out = tmp_path / "one_gop.mp4", tmp_path / "out.mp4"
    make_clip(source, ClipSpec(n_frames=48, width=160, height=96, gop=48))
    doc = _run(source, out, tmp_path, model="builtin:invert", chunk_frames=6, device="cpu")
    chunks = sorted(doc["chunks"], key=lambda c: c["index"])
    assert len(chunks) == 8 and _one_process_per_chunk(doc)
    pids = [c["infer_pid"] for c in chunks]
    assert all(pids[i] == pids[i + 1] for i in (0, 2, 4, 6)), pids  # a lane, one actor
    assert len(set(pids)) >= 2, pids  # the lanes were spread
    carried = [c["decode_carried"] for c in chunks]
    assert not carried[0] and all(carried[i] for i in (1, 3, 5, 7)), carried
    assert_exact(source, out, "builtin:invert")


def _rows(frames: list[int], *, keyframe_every: int) -> list[dict[str, int | str]]:
    rows, start = [], 0
    for index, n in enumerate(frames):
        seek = start - start % keyframe_every
        rows.append({"kind": "chunk", "index": index, "n_frames": n, "start_pts": start,
                     "seek_pts": -1 if seek == 0 else seek})  # fmt: skip
        start += n
    return rows


def test_lanes_are_runs_of_consecutive_chunks_of_about_equal_frames() -> None:
    rows = _rows([20, 20, 20, 20, 20, 20, 15, 15], keyframe_every=60)
    assert [[r["index"] for r in lane] for lane in lane_rows(rows, 2)] == [
        [0, 1, 2, 3], [4, 5, 6, 7],
    ]  # fmt: skip
    assert [len(lane) for lane in lane_rows(rows, 3)] == [2, 3, 3]  # 40, 60, 50 frames
    assert [len(lane) for lane in lane_rows(rows, 20)] == [1] * 8  # at most one per row
    assert [len(lane) for lane in lane_rows(_rows([50, 1, 1, 1], keyframe_every=60), 2)] == [
        1, 3,
    ]  # fmt: skip
    assert lane_rows(rows, 1) == [rows]


def test_only_a_video_that_splits_a_gop_goes_in_lanes() -> None:
    def lanes(frames: list[int], keyframe_every: int, workers: int = 2, fused: bool = True) -> int:
        plan = ActorPlan(workers=workers, num_gpus=0.0, num_cpus=1.0, intra_op_threads=1,
                         fused=fused)  # fmt: skip
        video = PlannedVideo(job=VideoJob(uri="in.mp4", output="out.mp4"), video_id="v",
                             rows=_rows(frames, keyframe_every=keyframe_every))  # fmt: skip
        return fused_lanes(video, plan)

    assert lanes([20] * 8, keyframe_every=60) == 2
    assert lanes([20] * 8, keyframe_every=20) == 0  # every chunk starts on a keyframe
    assert lanes([20] * 8, keyframe_every=60, fused=False) == 0
    assert lanes([20] * 8, keyframe_every=60, workers=1) == 0
    assert lanes([20], keyframe_every=60) == 0
    assert lanes([20] * 8, keyframe_every=60, workers=16) == 8  # a lane per chunk at most
    # lanes of at most LANE_CHUNKS chunks, as many for every actor
    assert lanes([20] * (2 * LANE_CHUNKS + 1), keyframe_every=60) == 4


def test_gpu_actors_split_unless_fused_is_asked(clips: dict[str, Path], tmp_path: Path) -> None:
    source = clips["open_gop"]
    options: dict[str, object] = dict(model="builtin:invert", chunk_frames=5, workers=2)
    split = _run(source, tmp_path / "auto.mp4", tmp_path, **options)
    assert not any(c["decode_pid"] == c["infer_pid"] for c in split["chunks"])
    fused = _run(source, tmp_path / "fused.mp4", tmp_path, stages="fused", **options)
    assert fused["totals"]["workers"] == 2 and _one_process_per_chunk(fused)
    assert {c["cuda_visible_devices"] for c in fused["chunks"]} <= {"0", "1"}
    assert_exact(source, tmp_path / "fused.mp4", "builtin:invert")


@pytest.mark.parametrize(
    ("model", "kind", "chunk_frames"), [("denoise3", "open_gop", 4), ("interp2x", "vfr", 3)]
)
def test_temporal_models_fused_equal_the_whole_video(
    temporal_clips: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    model: str,
    kind: str,
    chunk_frames: int,
) -> None:
    source, out = temporal_clips[kind], tmp_path / "out.mp4"
    doc = _run(
        source, out, tmp_path, model=f"builtin:{model}", chunk_frames=chunk_frames, device="cpu"
    )
    assert _one_process_per_chunk(doc) and len(doc["chunks"]) >= 3
    interpolate = 2 if model == "interp2x" else 1
    got = assert_timing_and_streams(source, out, interpolate=interpolate)
    assert np.array_equal(got, sequential_frames(f"builtin:{model}", source_frames(source)))


@pytest.mark.parametrize("every_n_frames", [1, 3])
def test_an_analysis_models_table_is_the_same_fused(
    clips: dict[str, Path], tmp_path: Path, every_n_frames: int
) -> None:
    source = clips["bframes_aac"]
    tables = {}
    for stages in ("fused", "split"):
        out = tmp_path / stages
        raypipe.process_video(
            str(source), str(out), model="builtin:phash", chunk_frames=7, device="cpu",
            stages=stages, every_n_frames=every_n_frames, quiet=True,
        )  # fmt: skip
        tables[stages] = pq.read_table(
            out / f"video_id={make_video_id(str(source))}" / "part-0.parquet"
        ).to_pydict()
    assert tables["fused"] == tables["split"]
    assert tables["fused"]["frame_index"] == list(range(0, 48, every_n_frames))


def test_the_plan_fuses_cpu_actors_only_unless_asked() -> None:
    cpus = int(ray.cluster_resources()["CPU"])
    cpu_model, auto_model = ModelConfig(device="cpu"), ModelConfig()
    fused = fuse_stages(plan_actors(RuntimeConfig(), cpu_model), RuntimeConfig())
    assert fused.fused and fused.workers == cpus // 2 and not fused.uses_gpu
    wide = RuntimeConfig(actor_num_cpus=2.0)
    assert fuse_stages(plan_actors(wide, cpu_model), wide).workers == cpus // 4
    given = RuntimeConfig(workers=3)
    assert fuse_stages(plan_actors(given, cpu_model), given).workers == 3
    split = RuntimeConfig(stages="split")
    assert not fuse_stages(plan_actors(split, cpu_model), split).fused
    gpu = plan_actors(RuntimeConfig(), auto_model)
    assert gpu.uses_gpu and fuse_stages(gpu, RuntimeConfig()) == gpu
    forced = fuse_stages(gpu, RuntimeConfig(stages="fused"))
    assert forced.fused and forced.workers == gpu.workers and forced.num_gpus == gpu.num_gpus
    with pytest.raises(ConfigError, match="stages must be auto, split or fused"):
        RuntimeConfig(stages="one")


def test_gpu_only_options_on_the_cpu_are_named_as_unused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """--workers-per-gpu and --engine-cache change nothing on CPU actors; a run given them
    says so in one line (they were left unused without a word; --precision fp16 has its
    own line, precision_note)."""
    shared = RuntimeConfig(workers_per_gpu=2)
    cached = ModelConfig(device="cpu", engine_cache="/tmp/engines", precision="fp16")
    with caplog.at_level(logging.WARNING, logger="raypipe.distributed"):
        plan_actors(shared, cached)
        plan_actors(RuntimeConfig(), ModelConfig(device="cpu", engine_cache="/tmp/e"))
        plan_actors(RuntimeConfig(), ModelConfig(device="cpu"))  # nothing asked: no line
        plan_actors(shared, ModelConfig(engine_cache="/tmp/engines"))  # GPU actors use them
    lines = [r.getMessage() for r in caplog.records if r.name == "raypipe.distributed"]
    assert lines == [
        "--workers-per-gpu and --engine-cache (workers_per_gpu=, engine_cache= in Python): "
        "not used, the run is on the CPU (--device cpu); they apply to GPU actors only",
        "--engine-cache (engine_cache= in Python): not used, the run is on the CPU (--device "
        "cpu); it applies to GPU actors only",
    ]


def _fused_actor_job() -> ActorJob:
    model = ModelConfig(model="builtin:invert", device="cpu")
    plan = ActorPlan(workers=1, num_gpus=0.0, num_cpus=1.0, intra_op_threads=1, fused=True)
    return ActorJob(model=load_model(RunConfig(model=model)), config=model, plan=plan)


def test_a_fused_actor_is_made_while_its_model_is_still_being_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The constructor returns (so Ray Data sends the first chunk, which decodes) while the
    model is built on the actor's own thread; the call waits for the model before it runs."""
    release, started = threading.Event(), threading.Event()
    build = InferActor._prepare

    def slow_build(self: InferActor) -> None:
        started.set()
        assert release.wait(30)
        build(self)

    monkeypatch.setattr(InferActor, "_prepare", slow_build)
    actor = ChunkActor(_fused_actor_job(), decoder="cpu", encode=EncodeConfig(), threads=1)
    assert started.wait(30) and actor.runner is None
    waiting = threading.Thread(target=actor._prepared)
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive()  # the call would still wait for the model
    release.set()
    waiting.join(30)
    assert not waiting.is_alive()
    assert actor.runner is not None and actor.failure is None


def test_what_stops_a_fused_actors_model_unforeseen_is_raised_by_its_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: InferActor) -> None:
        raise RuntimeError("no model today")

    monkeypatch.setattr(InferActor, "_prepare", broken)
    actor = ChunkActor(_fused_actor_job(), decoder="cpu", encode=EncodeConfig(), threads=1)
    with pytest.raises(RuntimeError, match="no model today"):
        actor._prepared()
