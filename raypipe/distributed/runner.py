"""The driver's side of a run: small rows in, one result per video out.

The pipeline (:mod:`raypipe.distributed.dataset`) hands the driver one small row per chunk
(ids, counts, timings, errors: the segments are already in the work directories) and each
video's facts (:class:`~raypipe.distributed.planning.VideoFacts`), with its first chunk row
or in a *video row* of their own. The driver counts a video's chunks; when all are in, it
submits the video's assembly as a Ray task (:mod:`raypipe.distributed.assembly`) and
yields the result when that task returns (or, for one video on a Ray of one node here,
assembles it itself: ``assemble_here``). A video whose chunk failed fails at once (a
model or processor failure is deterministic; its later chunks are dropped as they arrive).
The driver keeps state only for videos in flight, and chunk statistics in a
:class:`~raypipe.distributed.chunk_log.ChunkLog` (in memory for one video, spilled to a
local file for archives), so its memory follows what is in flight, not the archive's size.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import Any

import ray

from raypipe import faults, storage
from raypipe.archive_report import join_notes
from raypipe.config import AUTO_CODEC, RunConfig
from raypipe.distributed.assembly import (
    Assembled,
    assemble_remote,
    assemble_video,
    check_source_unchanged,
)
from raypipe.distributed.chunk_log import ChunkLog
from raypipe.distributed.chunk_task import Row, remove_work
from raypipe.distributed.metrics import ChunkMetrics
from raypipe.distributed.planning import VideoFacts, VideoResult
from raypipe.distributed.ray_errors import iter_rows
from raypipe.distributed.ray_logs import ray_lines_to_files
from raypipe.distributed.stats import chunk_record
from raypipe.errors import InputError
from raypipe.media.encode import fidelity_notes, playback_note, unused_settings_note
from raypipe.media.picture import PictureFormat

log = logging.getLogger("raypipe")


def _source_changed(facts: VideoFacts) -> tuple[str, str] | None:
    """The error a chunk's decode failure stands for where the source is no longer the one
    planned: a file still being written decoded more frames than its plan had, "the input
    is probably damaged" (a sweep). ``None`` where it is the same source."""
    try:
        check_source_unchanged(facts)
    except InputError as e:
        return type(e).__name__, str(e)
    return None


@dataclass
class _Video:
    """A video in flight: what the driver counts until it can be assembled."""

    video_id: str
    uri: str
    started: float = math.inf  # its first chunk's decode start, wall clock (time.time())
    facts: VideoFacts | None = None
    done: set[int] = field(default_factory=set)
    error: tuple[str, str] | None = None
    error_detail: str = ""
    chunk_stats: list[dict[str, Any]] = field(default_factory=list)
    gpu_samples: list[dict[str, Any]] = field(default_factory=list)
    gpu_notes: set[str] = field(default_factory=set)
    resized: dict[int, str] = field(default_factory=dict)  # chunk index -> its resize_note

    @property
    def ends(self) -> bool:
        """Whether nothing more is awaited: the video's facts are in and a chunk failed, or
        every chunk is done (processed now or reused)."""
        if self.facts is None:
            return False
        return self.error is not None or len(self.done | set(self.facts.reused)) == (
            self.facts.n_chunks
        )

    def add(self, row: Row) -> None:
        self.done.add(int(row["index"]))
        self.started = min(self.started, float(row.get("decode_start") or math.inf))
        self._gpu(str(row.get("gpu_samples") or ""))
        if row["error_type"] and self.error is None:
            self.error = (str(row["error_type"]), str(row["error_message"]))
            self.error_detail = str(row.get("error_detail") or "")

    def _gpu(self, text: str) -> None:
        if not text:
            return
        data = json.loads(text)
        if isinstance(data, dict):
            self.gpu_notes.add(str(data.get("reason", "")))
        else:
            self.gpu_samples.extend(data)

    def result(self, assembled: Assembled | None) -> VideoResult:
        facts = self.facts
        assert facts is not None
        result = VideoResult(
            uri=facts.uri,
            output=facts.output,
            status="done",
            frames_in=facts.n_frames,
            chunks=facts.n_chunks,
            reused_chunks=len(facts.reused),
            note=facts.note,
            chunk_stats=sorted(self.chunk_stats, key=lambda c: c["index"]),
            gpu_samples=self.gpu_samples,
            gpu_notes=sorted(n for n in self.gpu_notes if n),
        )
        error = self.error
        if error is None and assembled is not None:
            result.frames_out = assembled.frames_out
            result.assembly_seconds, result.assembly_pid = assembled.seconds, assembled.pid
            if assembled.error_type:
                error = (assembled.error_type, assembled.error_message)
        if error is not None and error[0] in ("DecodeError", "CorruptVideoError"):
            error = _source_changed(facts) or error
        if error is not None:
            result.status, (result.error_type, result.error_message) = "failed", error
            result.error_detail = self.error_detail
        # from its first chunk's decode to its result: the driver sees a video only once a
        # chunk of it is done, and an archive's chunks of many videos interleave
        result.seconds = max(time.time() - self.started, 0.0) if self.started < math.inf else 0.0
        return result


@contextmanager
def _no_pool_size_hint() -> Iterator[None]:
    """Leave out Ray Data's warning that an actor pool's minimum size is more than the
    inputs it received (a UserWarning from the executor's thread, suggesting
    ``override_num_blocks``): an archive cannot know its chunk count before its plan
    tasks run, so its pool may be larger than a small archive needs, and the advice does
    not apply to raypipe's rows. Python's warning filters are the process's, so this one
    holds while the run's rows are read."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="The minimum number of concurrent actors", category=UserWarning
        )
        yield


class Runner:
    """Consumes a pipeline's rows on the driver and yields one result per video.

    ``chunk_log``: where chunk records go; ``keep_chunk_stats``: also attach them to each
    video's result (one-video runs); ``on_frames``: progress, frames per finished chunk;
    ``on_planned``: progress, the frames of each video as its plan comes in;
    ``assemble_here``: assemble each video in this process, when its last chunk is in,
    instead of in a Ray task (a single video on a Ray of one node here: see
    :mod:`raypipe.distributed.assembly`).
    Every chunk and video outcome is recorded as Ray metrics (:class:`ChunkMetrics`: one
    series per video for a single video, one per run for an archive).
    """

    def __init__(
        self,
        cfg: RunConfig,
        *,
        chunk_log: ChunkLog,
        keep_chunk_stats: bool = False,
        per_video_metrics: bool = False,
        on_frames: Callable[[int], None] = lambda n: None,
        on_planned: Callable[[int], None] = lambda n: None,
        assemble_here: bool = False,
    ) -> None:
        self.cfg = cfg
        self.assemble_here = assemble_here
        self.chunk_log = chunk_log
        self.keep_chunk_stats = keep_chunk_stats
        self.metrics = ChunkMetrics(per_video=per_video_metrics)
        self.on_frames = on_frames
        self.on_planned = on_planned
        self.videos: dict[str, _Video] = {}
        self.ended: set[str] = set()  # ids of videos that have a result (late chunks dropped)
        # (work dir, table partition folder): swept again once no chunk is in flight
        self.failed_work_dirs: list[tuple[str, str]] = []
        self.assembling: dict[Any, _Video] = {}
        self._warned: set[str] = set()

    def run(self, ds: Any) -> Iterator[VideoResult]:
        """Every video's result, as soon as it is known; the dataset ``ds`` runs meanwhile."""
        try:
            # Ray's own log lines go to the session's log files meanwhile, unless --verbose;
            # the rows' iterator is closed inside (what it stops logs there too)
            rows = iter_rows(ds)
            with (
                ray_lines_to_files(verbose=self.cfg.verbose),
                _no_pool_size_hint(),
                closing(rows),
            ):
                for row in rows:
                    result = self._take(row)
                    if result is not None:
                        yield result
                    yield from self._assembled(timeout=0)
                yield from self._assembled(timeout=None)
        finally:
            for work_dir, partition in self.failed_work_dirs:  # a failed video's late
                remove_work(work_dir)  # segments, and its table's partition folder they made
                if partition:
                    storage.remove_empty_dirs(partition)

    def _take(self, row: Row) -> VideoResult | None:
        video_id = str(row["video_id"])
        # the facts come in a video row, or with the first chunk row of the video
        facts = VideoFacts.from_json(str(row["video"])) if row["video"] else None
        if facts is not None and facts.status != "planned":
            # ends at planning (skipped, failed): no chunk follows (an input listed twice
            # has an id per listing: VideoJob.video_id)
            if facts.status != "skipped":
                self.metrics.video_done(video_id, ok=False, error_type=facts.error_type)
            if video_id not in self.videos:
                self.ended.add(video_id)  # chunk rows it may still have are dropped
            return facts.result()
        if video_id in self.ended:  # its frames are not done: the progress leaves them out
            return None
        video = self.videos.get(video_id)
        if video is None:
            video = self.videos[video_id] = _Video(video_id=video_id, uri=str(row["uri"]))
        if facts is not None:
            if video.facts is None:
                self.on_planned(facts.n_frames)
            video.facts = facts
            self._note_fidelity(facts)
        if row["kind"] == "chunk":
            self._chunk(video, row)
        if not video.ends:
            return None
        if video.error is not None:
            return self._end(video, video.result(None))
        if self.assemble_here:
            return self._end_assembled(video, assemble_video(video.facts))
        ref = assemble_remote.remote(video.facts)
        self.assembling[ref] = video
        return None

    def _chunk(self, video: _Video, row: Row) -> None:
        video.add(row)
        record = chunk_record(row)
        self.chunk_log.add(record)
        if self.keep_chunk_stats:
            video.chunk_stats.append(record)
        self.metrics.observe_chunk(row)
        if self.cfg.chunk.decoder == "nvdec":
            note, node = str(row.get("decoder_note") or ""), str(row.get("decode_node") or "?")
            self._warn_once(note, "--decoder nvdec: chunks decode on the CPU on node %s: %s",
                            node[:12], note)  # fmt: skip
        if self.cfg.chunk.handoff == "yuv":
            note = str(row.get("handoff_note") or "")
            self._warn_once(note, "--handoff yuv: frames go to the model as RGB: %s", note)
        if row.get("resize_note"):
            video.resized[int(row["index"])] = str(row["resize_note"])
        if not row["error_type"]:  # a failed chunk's frames are not done
            self.on_frames(int(row["n_frames"]))
            faults.checkpoint("segment", str(row["chunk_id"]))  # its segment is written

    def _note_fidelity(self, facts: VideoFacts) -> None:
        """One line for each different way the encoder keeps less than a source (a lower
        bit depth or chroma, HDR metadata it cannot write), once per run; one where the
        encoder raypipe chose makes an H.264 that most players cannot play
        (:func:`~raypipe.media.encode.playback_note`); and one for each kind of stream a
        source has that the output does not get (another video stream, a data stream: a
        camera's telemetry), named with the first video that has it."""
        if facts.tensor or not facts.picture or facts.status != "planned":
            return
        encode = self.cfg.encode.for_output(facts.output)
        picture = PictureFormat.from_json(facts.picture)
        for note in [*fidelity_notes(encode, picture, facts.output), unused_settings_note(encode)]:
            self._warn_once(note, "%s", note)
        if self.cfg.encode.codec == AUTO_CODEC and not self.cfg.encode.pix_fmt:
            note = playback_note(encode, picture)  # the encoder raypipe chose, not the user
            self._warn_once(note, "%s", note)
        for left in facts.left_out:  # once per run: an archive's videos often share them
            name = os.path.basename(facts.uri.rstrip("/"))
            self._warn_once(left, "%s: left out %s", name, left)

    def _warn_once(self, reason: str, message: str, *args: object) -> None:
        """Log ``message`` the first time ``reason`` (non-empty) comes in this run: once
        per reason, not once per chunk or video."""
        if reason and reason not in self._warned:
            self._warned.add(reason)
            log.warning(message, *args)

    def unfinished(self) -> set[str]:
        """The inputs of the videos begun (planned, chunks in flight or being assembled)
        that have no result yet: after an interrupt, an assembly task may still finish
        one."""
        return {video.uri for video in self.videos.values()}

    def _end(self, video: _Video, result: VideoResult) -> VideoResult:
        self.videos.pop(video.video_id, None)
        self.ended.add(video.video_id)
        if video.resized:  # the first chunk's note: chunks end in any order
            log.warning("%s: %s", os.path.basename(video.uri), video.resized[min(video.resized)])
        if result.status == "failed" and video.facts is not None and video.facts.work_dir:
            remove_work(video.facts.work_dir)
            # its table's partition folder, made for the work dir (again by late segments)
            partition = storage.split(video.facts.output)[0] if video.facts.tensor else ""
            self.failed_work_dirs.append((video.facts.work_dir, partition))
            if partition:
                storage.remove_empty_dirs(partition)
        if result.status != "skipped":
            self.metrics.video_done(video.video_id, ok=result.ok, error_type=result.error_type)
        return result

    def finished_already(self) -> list[VideoResult]:
        """After the run stopped (an interrupt): the results of the assembly tasks that
        had finished by then, not yet taken (their outputs are there, and the report left
        them out; a sweep); none where Ray cannot say."""
        try:
            return list(self._assembled(timeout=0))
        except Exception:  # noqa: BLE001 - Ray gone: the report says what it knew
            return []

    def _assembled(self, timeout: float | None) -> Iterator[VideoResult]:
        """Results of the assembly tasks that have finished (all of them: ``None``)."""
        while self.assembling:
            ready, _ = ray.wait(list(self.assembling), num_returns=1, timeout=timeout)
            if not ready:
                return
            video = self.assembling.pop(ready[0])
            yield self._end_assembled(video, ray.get(ready[0]))

    def _end_assembled(self, video: _Video, assembled: Assembled) -> VideoResult:
        name = os.path.basename(video.facts.output.rstrip("/")) if video.facts else ""
        for warning in assembled.warnings:  # once per run, as the notes above
            self._warn_once(warning, "%s: %s", name, warning)
        result = video.result(assembled)
        if result.ok:  # every video's own in its report row: the terminal named the first's
            # alone (a second video's audio re-encoded as the first's went unsaid; a sweep)
            left = [f"left out {what}" for what in video.facts.left_out] if video.facts else []
            for warning in (*left, *assembled.warnings):
                result.note = join_notes(result.note, warning)
        return self._end(video, result)
