"""The Ray Data pipeline on a real local Ray with two logical GPUs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import ray
from conftest import (
    CHUNK_SIZES,
    assert_exact,
    idle_worker_pids,
    lossless_options,
    settled_idle_workers,
)

import raypipe
from raypipe.testing import CLIP_KINDS


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_local: None) -> None:
    return None


def lossless(**options: object) -> dict[str, object]:
    return {**lossless_options(), "quiet": True, **options}


@pytest.mark.parametrize("chunk_frames", CHUNK_SIZES)
@pytest.mark.parametrize("kind", sorted(CLIP_KINDS))
def test_exact_through_ray(
    clips: dict[str, Path], tmp_path: Path, kind: str, chunk_frames: int
) -> None:
    out = tmp_path / f"out{os.path.splitext(clips[kind])[1]}"
    stats = raypipe.process_video(
        str(clips[kind]), str(out), **lossless(model="builtin:invert", chunk_frames=chunk_frames)
    )
    assert stats.chunks >= 1 and stats.frames == len(raypipe.media.probe(str(clips[kind])).pts)
    assert_exact(clips[kind], out, "builtin:invert")
    assert not list(tmp_path.glob(".*")), "work directory or temporary file left behind"


def test_exact_through_ray_from_matroska_cues(clips: dict[str, Path], tmp_path: Path) -> None:
    """An open-GOP B-frame clip stream-copied into MKV and served over HTTP is planned from
    its cues and comes out exact."""
    import subprocess

    from raypipe.media import probe
    from raypipe.testing.http_server import serve_directory

    source = tmp_path / "open_gop.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(clips["open_gop"]), "-c", "copy",
                    str(source)], check=True, timeout=60)  # fmt: skip
    out = tmp_path / "out.mkv"
    with serve_directory(tmp_path) as (url, _served):
        info = probe(f"{url}/open_gop.mkv")  # over the network: from the cues and the grid
        assert info == probe(f"{url}/open_gop.mkv", use_index=False)
        stats = raypipe.process_video(
            f"{url}/open_gop.mkv", str(out), **lossless(model="builtin:invert", chunk_frames=7)
        )
    assert stats.frames == info.n_frames and stats.chunks >= 2
    assert_exact(source, out, "builtin:invert")


def test_rows_reaching_the_driver_carry_no_frames(clips: dict[str, Path], tmp_path: Path) -> None:
    """Encode tasks write the segments themselves: rows bring the driver no frames and no
    segment bytes, only the segment's size."""
    import ray

    from raypipe.config import build_run_config
    from raypipe.distributed.cluster import plan_actors
    from raypipe.distributed.dataset import build_dataset
    from raypipe.distributed.stages import chunk_row
    from raypipe.distributed.workload import LoadedModel
    from raypipe.infer.models import resolve_model
    from raypipe.media import plan_chunks, probe

    cfg = build_run_config(model="builtin:identity", chunk_frames=12, quiet=True)
    info = probe(str(clips["bframes_aac"]))
    plan = plan_chunks(info, cfg.chunk)
    work = tmp_path / "work"
    rows_in = [chunk_row(info, c, work_dir=str(work)) for c in plan.chunks]
    source = ray.data.from_items(rows_in, override_num_blocks=len(rows_in))
    model = LoadedModel(data=resolve_model("builtin:identity")[0], spec=None, tensor=False)
    ds = build_dataset(source, cfg, plan_actors(cfg.runtime, cfg.model), model)
    rows = list(ds.iter_rows())
    assert len(rows) == len(plan)
    raw_chunk_bytes = 12 * info.width * info.height * 3
    for row in rows:
        assert "frames" not in row and "pts" not in row and "segment" not in row
        written = (work / f"{row['chunk_id']}.rpseg").stat().st_size
        assert 0 < row["segment_bytes"] == written < raw_chunk_bytes


def test_cpu_actors_keep_decode_and_encode_separate(clips: dict[str, Path], tmp_path: Path) -> None:
    """With CPU actors (same resources as the tasks) and ``--stages split`` Ray Data must
    still not fuse the stages itself (raypipe's own fused stages: tests/distributed/
    test_fused.py)."""
    stats_path = tmp_path / "stats.json"
    raypipe.process_video(
        str(clips["ntsc"]),
        str(tmp_path / "out.mp4"),
        **lossless(
            model="builtin:grayscale",
            device="cpu",
            stages="split",
            chunk_frames=12,
            stats_path=str(stats_path),
        ),
    )
    chunks = json.loads(stats_path.read_text())["chunks"]
    assert all(c["gpu_ids"] == [] for c in chunks)
    assert all(
        c["decode_pid"] != c["infer_pid"] and c["encode_pid"] != c["infer_pid"] for c in chunks
    )
    assert_exact(clips["ntsc"], tmp_path / "out.mp4", "builtin:grayscale")


def test_build_engines_without_cuda_is_a_typed_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cluster has (logical) GPUs but no CUDA: one typed line, nothing in the cache."""
    from raypipe.cli import main

    cache = tmp_path / "cache"
    code = main(
        [
            "build-engines",
            "--model",
            "builtin:superres",
            "--cache",
            str(cache),
            "--size",
            "320x180",
            "--precision",
            "fp16",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("raypipe: error: DeviceUnavailableError: "), err
    assert not cache.exists() or not any(cache.rglob("*.engine"))


def test_stats_say_why_tensorrt_was_not_used(clips: dict[str, Path], tmp_path: Path) -> None:
    """The actors put raypipe doctor's provider facts into the run stats: on this machine
    (logical GPUs, whatever ONNX Runtime is installed) the notes are exactly what the provider
    checks say in-process, once per run, not once per chunk."""
    from raypipe.infer.provider_check import check_gpu_stack, ort_build
    from raypipe.infer.session import CPU, TENSORRT

    auto = tmp_path / "auto.json"
    stats = raypipe.process_video(
        str(clips["ntsc"]),
        str(tmp_path / "auto.mp4"),
        **lossless(model="builtin:invert", chunk_frames=12, stats_path=str(auto)),
    )
    doc = json.loads(auto.read_text())
    assert all("provider_notes" not in c for c in doc["chunks"])
    notes = doc["totals"]["provider_notes"]
    assert notes == stats.provider_notes and len(set(notes)) == len(notes)
    assert len(doc["chunks"]) > 1
    granted = stats.providers
    if granted[0] == TENSORRT:
        assert notes == []
    else:
        stack = check_gpu_stack()
        assert notes[: len(stack.why_not(granted))] == stack.why_not(granted)
        assert notes[0].startswith("TensorrtExecutionProvider not used: ")
    if granted == [CPU] and ort_build().package == "onnxruntime":
        assert "is not in this ONNX Runtime build" in notes[0]
        assert notes[-1].endswith(": no GPU provider")  # the actor's provider setup


def test_a_next_run_finds_its_actors_worker_processes_started(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    # Ray stays connected after a library run, and the node starts the worker processes a
    # next run's actors take (raypipe/distributed/prestart.py): a notebook's next run
    # does not wait for new processes to start.
    options = lossless(model="builtin:invert", device="cpu", workers=2)
    before = idle_worker_pids(os.getpid())
    ray.data.DataContext.get_current().enable_progress_bars = True  # a notebook's setting
    raypipe.process_video(str(clips["bframes_aac"]), str(tmp_path / "a.mp4"), **options)
    # raypipe's runs show no Ray Data bars; the process's own datasets keep theirs (they
    # were turned off for good: a sweep)
    assert ray.data.DataContext.get_current().enable_progress_bars
    idle = settled_idle_workers(os.getpid(), before)
    assert idle - before, "no worker process started after the run"
    stats = raypipe.process_video(str(clips["bframes_aac"]), str(tmp_path / "b.mp4"), **options)
    actors = {c["infer_pid"] for c in stats.chunk_stats}
    assert actors and actors <= idle, (actors, idle)
