"""raypipe's metrics reach Ray's Prometheus endpoint (a real local Ray and metrics agent)."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from raypipe.distributed.metrics import ChunkMetrics, metrics_export_url  # noqa: E402

JOB = "test-metrics-job"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def metrics_port() -> Iterator[int]:
    """A local Ray whose metrics agent exports on a known port, reporting every second."""
    if ray.is_initialized():
        ray.shutdown()
    port = _free_port()
    ray.init(
        address="local",  # a new Ray even when `ray start` runs on this machine
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _metrics_export_port=port,
        _system_config={"metrics_report_interval_ms": 1000},
    )
    yield port
    ray.shutdown()


def _row(video_id: str, index: int, n_frames: int, error_type: str = "") -> dict[str, object]:
    start = 1_700_000_000.0 + index
    return {
        "video_id": video_id,
        "chunk_id": f"{video_id}-{index:06d}",
        "index": index,
        "n_frames": n_frames,
        "decode_start": start,
        "decode_s": 0.02,
        "infer_start": start + 0.03,
        "infer_s": 0.2,
        "encode_start": start + 0.25,
        "encode_s": 0.05,
        "error_type": error_type,
        "error_message": "boom" if error_type else "",
    }


def _series(body: str, name: str, **labels: str) -> float:
    """Sum of the samples of metric ``name`` (Ray's ``ray_`` prefix and a counter's
    ``_total`` suffix allowed) whose labels include ``labels``."""
    total, found = 0.0, False
    pattern = re.compile(rf"^(?:ray_)?{name}(?:_total)?\{{(.*)\}} (\S+)$")
    for line in body.splitlines():
        m = pattern.match(line)
        if not m or any(f'{k}="{v}"' not in m.group(1) for k, v in labels.items()):
            continue
        total += float(m.group(2))
        found = True
    return total if found else float("nan")


def _scrape_settled(
    url: str, expected: list[tuple[str, dict[str, str], float]], timeout_s: float = 30.0
) -> str:
    """Scrape until every ``(metric, labels, value)`` in ``expected`` holds, or the time is up.

    Ray exports recorded metrics on a timer (every second here), so a scrape taken just
    after a run can still show the snapshot from before its last chunks were recorded.
    The last body comes back either way, for the caller's assertions to report the
    values actually seen."""
    deadline = time.monotonic() + timeout_s
    body = ""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = response.read().decode()
        except OSError:
            body = ""
        if all(_series(body, name, **labels) == value for name, labels, value in expected):
            return body
        if time.monotonic() >= deadline:
            return body
        time.sleep(0.5)


def test_without_ray_every_call_is_a_no_op() -> None:
    # First in the module: the Ray fixture below has not started yet.
    if ray.is_initialized():
        ray.shutdown()
    metrics = ChunkMetrics(job="x")
    assert not metrics.enabled
    metrics.observe_chunk(_row("v", 0, 4))
    metrics.video_done("v", ok=True)


def test_chunk_metrics_reach_the_metrics_endpoint(metrics_port: int) -> None:
    url = metrics_export_url()
    assert url.endswith(f":{metrics_port}/metrics")
    metrics = ChunkMetrics(job=JOB)
    assert metrics.enabled
    for i in range(3):
        metrics.observe_chunk(_row("clip-a", i, 16))
    metrics.observe_chunk(_row("clip-a", 3, 16, error_type="DecodeError"))
    metrics.chunk_failed("clip-a", "RayTaskError")
    metrics.video_done("clip-a", ok=False, error_type="DecodeError")
    metrics.video_done("clip-b", ok=True)

    body = _scrape_settled(
        url,
        [
            ("raypipe_frames_processed", {"job": JOB, "video": "clip-a"}, 48),
            ("raypipe_videos_done", {"job": JOB, "video": "clip-b"}, 1),
            ("raypipe_videos_failed", {"job": JOB, "error_type": "DecodeError"}, 1),
        ],
    )
    assert _series(body, "raypipe_frames_processed", job=JOB, video="clip-a") == 48
    assert _series(body, "raypipe_chunks_processed", job=JOB) == 3
    assert _series(body, "raypipe_chunk_failures", job=JOB, error_type="DecodeError") == 1
    assert _series(body, "raypipe_chunk_failures", job=JOB, error_type="RayTaskError") == 1
    # 3 good chunks, each 0.30 s from decode start to encode end: all in the 0.5 s bucket
    assert _series(body, "raypipe_chunk_latency_seconds_count", job=JOB) == 3
    assert _series(body, "raypipe_chunk_latency_seconds_bucket", job=JOB, le="0.25") == 0
    assert _series(body, "raypipe_chunk_latency_seconds_bucket", job=JOB, le="0.5") == 3
    assert _series(body, "raypipe_stage_seconds_count", job=JOB, stage="infer") == 3
    assert _series(body, "raypipe_videos_done", job=JOB, video="clip-b") == 1
    assert _series(body, "raypipe_videos_failed", job=JOB, error_type="DecodeError") == 1


def test_per_video_false_keeps_one_series_per_job(metrics_port: int) -> None:
    job = f"{JOB}-archive"
    metrics = ChunkMetrics(job=job, per_video=False)
    for video in ("v1", "v2", "v3"):
        metrics.observe_chunk(_row(video, 0, 10))
    body = _scrape_settled(
        metrics_export_url(), [("raypipe_frames_processed", {"job": job, "video": "*"}, 30)]
    )
    assert _series(body, "raypipe_frames_processed", job=job, video="*") == 30
    assert 'video="v1"' not in "\n".join(line for line in body.splitlines() if job in line)


def test_a_run_records_its_chunks_and_video_on_the_endpoint(
    metrics_port: int, clips: dict[str, Path], tmp_path: Path
) -> None:
    """process_video itself feeds the metrics: no caller wiring needed."""
    from raypipe import process_video

    stats = process_video(
        str(clips["bframes_aac"]),
        str(tmp_path / "out.mp4"),
        model="builtin:invert",
        chunk_frames=16,
        quiet=True,
        stats_path=str(tmp_path / "stats.json"),
    )
    video = json.loads((tmp_path / "stats.json").read_text())["chunks"][0]["video_id"]
    job = ray.get_runtime_context().get_job_id()
    labels = {"job": job, "video": video}
    body = _scrape_settled(
        metrics_export_url(),
        [
            ("raypipe_frames_processed", labels, stats.frames),
            ("raypipe_chunks_processed", labels, stats.chunks),
            ("raypipe_videos_done", labels, 1),
            ("raypipe_chunk_latency_seconds_count", labels, stats.chunks),
        ],
    )
    assert _series(body, "raypipe_frames_processed", job=job, video=video) == stats.frames
    assert _series(body, "raypipe_chunks_processed", job=job, video=video) == stats.chunks
    assert _series(body, "raypipe_videos_done", job=job, video=video) == 1
    assert _series(body, "raypipe_chunk_latency_seconds_count", job=job, video=video) == (
        stats.chunks
    )
