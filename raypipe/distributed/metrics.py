"""Run metrics on Ray's metrics endpoint (Prometheus format), through ``ray.util.metrics``.

The driver records them as result rows come back, so no worker has to know about
metrics and a retried chunk is counted once, when its result arrives:

====================================  =========  ===================================
metric (Ray exports it as ``ray_…``)  kind       what
====================================  =========  ===================================
raypipe_frames_processed              counter    frames of chunks that came back ok
raypipe_chunks_processed              counter    chunks that came back ok
raypipe_chunk_failures                counter    chunks that came back with an error
                                                 (tag ``error_type``)
raypipe_chunk_latency_seconds         histogram  a chunk's decode start to encode end
raypipe_stage_seconds                 histogram  time in one stage (tag ``stage``:
                                                 decode, infer, encode)
raypipe_videos_done                   counter    videos assembled and committed
raypipe_videos_failed                 counter    videos that failed (tag ``error_type``)
====================================  =========  ===================================

Every series carries ``job`` (a run label; the Ray job id by default) and ``video``. For
archives pass ``per_video=False``: ``video`` is then ``"*"`` on every series, which keeps
the number of series bounded (ten thousand videos would otherwise mean ten thousand
series per metric, a known way to overload Prometheus).

Ray serves them at ``http://NODE:METRICS_EXPORT_PORT/metrics`` on every node (the port is
``ray.init(_metrics_export_port=...)`` or ``ray start --metrics-export-port``; see
:func:`metrics_export_url`); Ray's metrics agent reports every ~10 s by default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import ray

__all__ = [
    "CHUNK_LATENCY_BOUNDARIES_S",
    "STAGE_BOUNDARIES_S",
    "ChunkMetrics",
    "metrics_export_url",
]

CHUNK_LATENCY_BOUNDARIES_S: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
)  # fmt: skip
"""Upper bounds (seconds) of the chunk latency buckets: 1-frame chunks of tiny frames
take tens of ms, 64-frame 4K chunks through a heavy model minutes."""
STAGE_BOUNDARIES_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
"""Upper bounds (seconds) of the per-stage time buckets."""

ALL_VIDEOS = "*"
_STAGES = ("decode", "infer", "encode")


def metrics_export_url() -> str:
    """``http://HOST:PORT/metrics`` of this node's Ray metrics agent (Ray must be running)."""
    node = ray._private.worker.global_worker.node
    return f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"


def _text(value: Any) -> str:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return "" if value is None else str(value)


def _number(value: Any) -> float:
    try:
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return math.nan
    return number


class ChunkMetrics:
    """Counters and histograms of one run, recorded by the driver.

    ``observe_chunk(row)`` per chunk result row (or its stats record: the same keys),
    ``chunk_failed(...)`` for a chunk lost without a row (a task that exhausted its
    retries), ``video_done(video_id, ok=...)`` per video. Without a connected Ray every
    call does nothing (``enabled`` is false), so callers need no guard.
    """

    def __init__(self, job: str | None = None, *, per_video: bool = True) -> None:
        self.enabled = ray.is_initialized()
        self.per_video = per_video
        self.job = job if job is not None else self._ray_job_id()
        if not self.enabled:
            return
        from ray.util.metrics import Counter, Histogram

        tags = ("job", "video")
        self._frames = Counter(
            "raypipe_frames_processed",
            description="Frames of chunks that came back processed.",
            tag_keys=tags,
        )
        self._chunks = Counter(
            "raypipe_chunks_processed",
            description="Chunks that came back processed.",
            tag_keys=tags,
        )
        self._chunk_failures = Counter(
            "raypipe_chunk_failures",
            description="Chunks that came back with an error, by error type.",
            tag_keys=(*tags, "error_type"),
        )
        self._latency = Histogram(
            "raypipe_chunk_latency_seconds",
            description="Seconds from a chunk's decode start to its encode end.",
            boundaries=list(CHUNK_LATENCY_BOUNDARIES_S),
            tag_keys=tags,
        )
        self._stage = Histogram(
            "raypipe_stage_seconds",
            description="Seconds a chunk spent in one stage (decode, infer, encode).",
            boundaries=list(STAGE_BOUNDARIES_S),
            tag_keys=(*tags, "stage"),
        )
        self._videos_done = Counter(
            "raypipe_videos_done",
            description="Videos assembled and committed.",
            tag_keys=tags,
        )
        self._videos_failed = Counter(
            "raypipe_videos_failed",
            description="Videos that failed, by error type.",
            tag_keys=(*tags, "error_type"),
        )

    @staticmethod
    def _ray_job_id() -> str:
        if not ray.is_initialized():
            return ""
        try:
            return ray.get_runtime_context().get_job_id()
        except Exception:  # noqa: BLE001 - a label only
            return ""

    def _tags(self, video_id: str) -> dict[str, str]:
        return {"job": self.job, "video": video_id if self.per_video else ALL_VIDEOS}

    def observe_chunk(self, row: Mapping[str, Any]) -> None:
        """Record one chunk result (a row as it reaches the driver, or its stats record)."""
        if not self.enabled:
            return
        tags = self._tags(_text(row.get("video_id", "")))
        error_type = _text(row.get("error_type", ""))
        if error_type:
            self._chunk_failures.inc(1, tags={**tags, "error_type": error_type})
            return
        frames = _number(row.get("n_frames", 0))
        if frames > 0:
            self._frames.inc(frames, tags=tags)
        self._chunks.inc(1, tags=tags)
        for stage in _STAGES:
            seconds = _number(row.get(f"{stage}_s"))
            if math.isfinite(seconds) and seconds >= 0:
                self._stage.observe(seconds, tags={**tags, "stage": stage})
        start = _number(row.get("decode_start"))
        end = _number(row.get("encode_start")) + _number(row.get("encode_s"))
        if math.isfinite(start) and math.isfinite(end) and end >= start:
            self._latency.observe(end - start, tags=tags)

    def chunk_failed(self, video_id: str, error_type: str) -> None:
        """Record a chunk that failed without a result row (e.g. its task was lost)."""
        if self.enabled:
            tags = {**self._tags(video_id), "error_type": error_type or "unknown"}
            self._chunk_failures.inc(1, tags=tags)

    def video_done(self, video_id: str, *, ok: bool, error_type: str = "") -> None:
        """Record a video's outcome: committed (``ok``) or failed with ``error_type``."""
        if not self.enabled:
            return
        tags = self._tags(video_id)
        if ok:
            self._videos_done.inc(1, tags=tags)
        else:
            self._videos_failed.inc(1, tags={**tags, "error_type": error_type or "unknown"})
