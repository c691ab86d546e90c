"""What the driver makes of the rows coming back: the progress counts the frames of chunks
that are done, not of failed ones (a processor failing on every frame showed "60/75
frames (80%)" before its error) nor of a failed video's chunks still in flight; a video's
seconds run from its first chunk's decode (an archive's report gave 0.3 s for a video
that took 20: the driver first sees a video once a chunk of it is done)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from raypipe.config import RunConfig
from raypipe.distributed.chunk_log import ChunkLog
from raypipe.distributed.planning import VideoFacts
from raypipe.distributed.runner import Runner


def _row(index: int, *, error: str = "", facts: VideoFacts | None = None, **more: Any) -> Any:
    return {
        "kind": "chunk", "video_id": "v", "uri": "in.mp4", "index": index, "n_frames": 10,
        "chunk_id": f"v-{index}", "video": facts.to_json() if facts else "",
        "error_type": error, "error_message": "kaboom" if error else "",
        "decode_start": time.time(), **more,
    }  # fmt: skip


def _runner(frames: list[int]) -> Runner:
    return Runner(RunConfig(), chunk_log=ChunkLog(), on_frames=frames.append)


def test_the_frames_of_failed_chunks_are_not_counted_as_done() -> None:
    facts = VideoFacts(video_id="v", uri="in.mp4", output="out.mp4", status="planned",
                       n_frames=40, n_chunks=4)  # fmt: skip
    frames: list[int] = []
    runner = _runner(frames)
    assert runner._take(_row(0, facts=facts)) is None
    result = runner._take(_row(1, error="ProcessorError"))
    assert result is not None and result.status == "failed"
    assert runner._take(_row(2)) is None  # the failed video's chunk still in flight
    assert frames == [10]


def test_a_videos_seconds_run_from_its_first_chunks_decode() -> None:
    facts = VideoFacts(video_id="v", uri="in.mp4", output="out.mp4", status="planned",
                       n_frames=20, n_chunks=2)  # fmt: skip
    runner = _runner([])
    runner._take(_row(1, facts=facts, decode_start=time.time() - 3.0))
    result = runner._take(_row(0, error="ModelError", decode_start=time.time() - 7.0))
    assert result is not None
    assert result.seconds == pytest.approx(7.0, abs=0.5)
