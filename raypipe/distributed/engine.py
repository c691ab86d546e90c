"""The engine under both entry points: many videos, one streaming Ray Data pipeline.

Phase 1 plans every video (probe + chunk plan + resume checks), in parallel Ray tasks for
archives. Phase 2 puts the chunks of all videos into one dataset, so short videos keep
every worker busy and no worker idles between videos while chunks remain. The driver
receives only encoded segments, writes each to the video's work directory next to its
output as it arrives (bounded memory, and what a resumed run reuses), and assembles a
video as soon as its last chunk is in.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ray

from raypipe import errors, faults, storage
from raypipe.config import ChunkConfig, RunConfig
from raypipe.distributed.cluster import ActorPlan
from raypipe.distributed.dataset import build_dataset, iter_rows
from raypipe.distributed.metrics import ChunkMetrics
from raypipe.distributed.stages import Row, chunk_row
from raypipe.distributed.workload import LoadedModel
from raypipe.errors import RaypipeError
from raypipe.media.encode import fidelity_notes
from raypipe.media.mux import assemble, output_format
from raypipe.media.picture import PictureFormat
from raypipe.media.plan import chunk_offsets, plan_chunks, sampled_indices
from raypipe.media.probe import make_video_id, probe
from raypipe.media.source import open_input
from raypipe.reuse import (
    PROVENANCE_TAG,
    Provenance,
    ReuseKey,
    provenance_from_tags,
    provenance_tags,
    source_identity,
)

log = logging.getLogger("raypipe")

RUN_FILE = "run.json"


@dataclass(frozen=True)
class VideoJob:
    """One input and where its output goes."""

    uri: str
    output: str
    error: str = ""  # set when the job is invalid before it starts (e.g. output escapes)
    output_problem: str = ""  # the output cannot hold this run's video (checked after probing)


@dataclass
class VideoResult:
    """What happened to one video (a row of the archive report)."""

    uri: str
    output: str
    status: str  # "done" | "failed" | "skipped"
    error_type: str = ""
    error_message: str = ""
    error_detail: str = ""  # where it failed (a worker's traceback), for --verbose
    frames_in: int = 0
    frames_out: int = 0
    chunks: int = 0
    reused_chunks: int = 0
    note: str = ""  # why earlier work was not reused (``redone: the source changed``)
    seconds: float = 0.0
    chunk_stats: list[dict[str, Any]] = field(default_factory=list)
    gpu_samples: list[dict[str, Any]] = field(default_factory=list)
    gpu_notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("done", "skipped")


@dataclass
class PlannedVideo:
    job: VideoJob
    video_id: str = ""
    result: VideoResult | None = None  # final already (skipped, failed to plan)
    rows: list[Row] = field(default_factory=list)  # chunks still to process
    n_chunks: int = 0
    reused: list[int] = field(default_factory=list)  # chunks already done (or empty)
    n_frames: int = 0
    n_out: int = 0  # frames (video) or table rows (analysis) the output will have
    tensor: bool = False
    work_dir: str = ""
    height: int = 0  # upright (as displayed), px
    width: int = 0
    picture: PictureFormat | None = None
    source_id: str = ""  # raypipe.reuse.source_identity of the input
    provenance: Provenance | None = None  # what makes this video's segments and output
    note: str = ""


def work_dir_for(output: str) -> str:
    """The work directory of ``output``: hidden, next to it, deleted on success."""
    parent, name = storage.split(output)
    return storage.join(parent, f".{name}.raypipe-work")


def plan_video(
    job: VideoJob,
    chunk: ChunkConfig,
    *,
    resume: bool,
    key: ReuseKey | None,
    tensor: bool = False,
) -> PlannedVideo:
    """Probe and plan one video; decide what a resumed run can skip or reuse. Never raises
    for a bad input: the error goes into the result. ``key``: what makes segments and
    outputs (:mod:`raypipe.reuse`); earlier work is reused only when it records the same key
    and source. ``None`` (a fresh run, no resume): the caller sets ``provenance`` from
    ``source_id`` once it knows the key. ``tensor``: an analysis run, whose output is a
    Parquet table of the sampled frames."""
    if resume and key is None:
        raise TypeError("plan_video: a resumed run needs the reuse key")
    started = time.monotonic()
    planned = PlannedVideo(job=job, video_id=make_video_id(job.uri), tensor=tensor)
    try:
        if job.error:
            raise errors.ConfigError(job.error)
        info = probe(job.uri)
        if job.output_problem:  # after the probe: a bad input says more
            raise errors.ConfigError(job.output_problem)
        planned.source_id = source_identity(job.uri)
        if key is not None:
            planned.provenance = Provenance.of(key, planned.source_id)
        plan = plan_chunks(info, chunk)
        planned.n_frames, planned.n_chunks = info.n_frames, len(plan)
        planned.picture = info.picture_format
        planned.width, planned.height = planned.picture.upright_size
        keeps: list[list[int] | None] = [None] * len(plan)
        if tensor and chunk.samples:
            keeps = list(chunk_offsets(plan, sampled_indices(info, chunk)))
        planned.n_out = sum(c.n_frames if k is None else len(k) for c, k in zip(plan.chunks, keeps))
        storage.remove_stale_staging(job.output)
        notes = []
        provenance = planned.provenance
        if resume and provenance is not None and storage.exists(job.output):
            why = _why_not_finished(job.output, planned.n_out, tensor, provenance)
            if not why:
                planned.result = VideoResult(
                    uri=job.uri,
                    output=job.output,
                    status="skipped",
                    frames_in=info.n_frames,
                    frames_out=planned.n_out,
                    chunks=len(plan),
                    seconds=time.monotonic() - started,
                )
                return planned
            notes.append(f"redone: {why}")
        planned.work_dir = work_dir_for(job.output)
        done: set[str] = set()
        if resume and provenance is not None:
            done, why = _reusable_segments(planned.work_dir, provenance)
            if why:
                notes.append(f"segments not reused: {why}")
        else:
            storage.remove_tree(planned.work_dir)
        planned.note = "; ".join(notes)
        skip = done | {c.chunk_id for c, k in zip(plan.chunks, keeps) if k == []}
        planned.reused = sorted(c.index for c in plan.chunks if c.chunk_id in skip)
        firsts = [0]
        for c in plan.chunks:
            firsts.append(firsts[-1] + c.n_frames)
        planned.rows = [
            chunk_row(info, c, first_index=firsts[c.index], keep=keeps[c.index])
            for c in plan.chunks
            if c.chunk_id not in skip
        ]
    except Exception as e:  # noqa: BLE001 - one bad input fails alone
        planned.result = VideoResult(
            uri=job.uri,
            output=job.output,
            status="failed",
            error_type=type(e).__name__,
            error_message=" ".join(str(e).split()),
            seconds=time.monotonic() - started,
        )
    return planned


def _why_not_finished(output: str, n_out: int, tensor: bool, provenance: Provenance) -> str:
    """Why the existing ``output`` is not this run's finished work (``""`` when it is): it
    must record this run's key and source, and have the frames (video: probed) or rows
    (analysis table) the run would give it."""
    try:
        if tensor:
            import io

            import pyarrow.parquet as pq

            meta = pq.ParquetFile(io.BytesIO(storage.read_bytes(output))).metadata
            tags = {
                k.decode(): v.decode()
                for k, v in (meta.metadata or {}).items()
                if k == PROVENANCE_TAG.encode()
            }
            count = meta.num_rows
        else:
            with open_input(output) as container:
                tags = dict(container.metadata)
            count = -1
        why = provenance.why_not(provenance_from_tags(tags))
        if why:
            return why
        if not tensor:
            count = probe(output).n_frames
    except (RaypipeError, OSError, ValueError) as e:
        return f"the output does not read ({type(e).__name__})"
    if count == n_out:
        return ""
    return f"the output holds {count} {'rows' if tensor else 'frames'}, the run gives {n_out}"


def _reusable_segments(work_dir: str, provenance: Provenance) -> tuple[set[str], str]:
    """Chunk ids whose segments an earlier run with the same key and source left in
    ``work_dir``, and why none are reusable when segments are there but not reused (the
    work directory is then removed)."""
    names = storage.list_names(work_dir)
    segments = {n[: -len(".rpseg")] for n in names if n.endswith(".rpseg")}
    if not names:
        return set(), ""
    recorded = None
    if RUN_FILE in names:
        try:
            recorded = Provenance.parse(storage.read_bytes(storage.join(work_dir, RUN_FILE)))
        except OSError:
            recorded = None
    why = provenance.why_not(recorded, what="work directory")
    if why:
        storage.remove_tree(work_dir)  # other settings or source: nothing there is reusable
        return set(), why if segments else ""
    return segments, ""


@ray.remote(num_cpus=0.5)
def _plan_remote(
    job: VideoJob, chunk: ChunkConfig, resume: bool, key: ReuseKey, tensor: bool
) -> PlannedVideo:
    return plan_video(job, chunk, resume=resume, key=key, tensor=tensor)


def plan_all(
    jobs: list[VideoJob],
    chunk: ChunkConfig,
    *,
    resume: bool,
    key: ReuseKey,
    tensor: bool = False,
    max_in_flight: int = 16,
) -> Iterator[PlannedVideo]:
    """Plan ``jobs`` in parallel Ray tasks, at most ``max_in_flight`` at a time."""
    pending: list[Any] = []
    queue = iter(jobs)
    while True:
        for job in queue:
            pending.append(_plan_remote.remote(job, chunk, resume, key, tensor))
            if len(pending) >= max_in_flight:
                break
        if not pending:
            return
        ready, pending = ray.wait(pending, num_returns=1)
        yield ray.get(ready[0])


def run_planned(
    planned: list[PlannedVideo],
    cfg: RunConfig,
    actors: ActorPlan,
    model: LoadedModel,
    *,
    on_frames: Callable[[int], None] = lambda n: None,
) -> Iterator[VideoResult]:
    """Process the chunks of every planned video in one dataset; yield each video's result
    as soon as it is assembled, or as soon as one of its chunks has failed (the video's
    later chunks are dropped as they arrive: a model or processor failure is deterministic,
    so a single video fails at its first failed chunk).

    Every chunk row and video outcome is also recorded as Ray metrics
    (:class:`~raypipe.distributed.metrics.ChunkMetrics`: one series per video for a single
    video, one per run for an archive)."""
    metrics = ChunkMetrics(per_video=len(planned) == 1)
    state: dict[str, _VideoState] = {}
    for p in planned:
        if p.result is not None:
            _record_video(metrics, p.video_id or p.job.uri, p.result)
            yield p.result
        else:
            state[p.video_id] = _VideoState(p)
    for st in state.values():
        p = st.planned
        if p.work_dir and p.provenance is not None:
            storage.makedirs(p.work_dir)
            record = p.provenance.to_text(with_parts=True).encode()
            storage.write_bytes(storage.join(p.work_dir, RUN_FILE), record)
        if st.complete:
            yield _record_video(metrics, st.planned.video_id, st.finish())
    rows = [row for st in state.values() for row in st.planned.rows]
    if not rows:
        return
    _log_fidelity_notes(cfg, [st.planned for st in state.values() if st.planned.rows])
    first = next(st.planned for st in state.values() if st.planned.rows)
    ds = build_dataset(rows, cfg, actors, model, warmup_hw=(first.height, first.width))
    warned: set[str] = set()
    finished: set[str] = set()
    for row in _iter_rows(ds, verbose=cfg.verbose):
        if str(row["video_id"]) in finished:  # a chunk of a video that has already failed
            on_frames(int(row["n_frames"]))
            continue
        st = state[str(row["video_id"])]
        st.add(row)
        metrics.observe_chunk(row)
        note = str(row.get("decoder_note") or "")
        if cfg.chunk.decoder == "nvdec" and note and note not in warned:
            warned.add(note)  # once per reason, not once per chunk
            log.warning(
                "--decoder nvdec: chunks decode on the CPU on node %s: %s",
                str(row.get("decode_node") or "?")[:12],
                note,
            )
        on_frames(int(row["n_frames"]))
        if st.complete or st.error is not None:
            finished.add(st.planned.video_id)
            yield _record_video(metrics, st.planned.video_id, st.finish())


def _log_fidelity_notes(cfg: RunConfig, planned: list[PlannedVideo]) -> None:
    """One line for each different way the encoder keeps less than a source (a lower bit
    depth or chroma, HDR metadata it cannot write), however many videos it concerns."""
    if planned and planned[0].tensor:
        return
    seen: dict[str, int] = {}
    for p in planned:
        if p.picture is not None:
            for note in fidelity_notes(cfg.encode, p.picture):
                seen[note] = seen.get(note, 0) + 1
    for note, count in seen.items():
        log.warning("%s%s", note, f" ({count} videos)" if count > 1 else "")


def _record_video(metrics: ChunkMetrics, video_id: str, result: VideoResult) -> VideoResult:
    if result.status != "skipped":
        metrics.video_done(video_id, ok=result.ok, error_type=result.error_type)
    return result


class _VideoState:
    def __init__(self, planned: PlannedVideo) -> None:
        self.planned = planned
        self.started = time.monotonic()
        self.done = set(planned.reused)
        self.error: tuple[str, str] | None = None
        self.error_detail = ""  # the remote traceback of the first failed chunk, if any
        self.chunk_stats: list[dict[str, Any]] = []
        self.gpu_samples: list[dict[str, Any]] = []
        self.gpu_notes: set[str] = set()

    @property
    def complete(self) -> bool:
        return len(self.done) == self.planned.n_chunks

    def add(self, row: Row) -> None:
        from raypipe.distributed.stats import chunk_record

        index = int(row["index"])
        self.done.add(index)
        self.chunk_stats.append(chunk_record(row))
        self._gpu(str(row.get("gpu_samples") or ""))
        if row["error_type"]:
            if self.error is None:
                self.error = (str(row["error_type"]), str(row["error_message"]))
                self.error_detail = str(row.get("error_detail") or "")
        elif self.error is None:
            name = f"{row['chunk_id']}.rpseg"
            storage.write_bytes(storage.join(self.planned.work_dir, name), bytes(row["segment"]))
            faults.checkpoint("segment", str(row["chunk_id"]))

    def _gpu(self, text: str) -> None:
        if not text:
            return
        data = json.loads(text)
        if isinstance(data, dict):
            self.gpu_notes.add(str(data.get("reason", "")))
        else:
            self.gpu_samples.extend(data)

    def _segments(self) -> list[str]:
        p = self.planned
        return [storage.join(p.work_dir, f"{p.video_id}-{i:06d}.rpseg") for i in range(p.n_chunks)]

    def _write_table(self) -> int:
        """Concatenate the chunks' tables in chunk order into the video's Parquet output."""
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = [
            pq.read_table(io.BytesIO(storage.read_bytes(uri)))
            for uri in self._segments()
            if storage.exists(uri)
        ]
        table = pa.concat_tables(tables) if tables else pa.table({})
        if self.planned.provenance is not None:
            tag = {PROVENANCE_TAG: self.planned.provenance.to_text()}
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **tag})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        parent, _ = storage.split(self.planned.job.output)
        storage.makedirs(parent)
        storage.write_bytes(self.planned.job.output, sink.getvalue().to_pybytes())
        return int(table.num_rows)

    def finish(self) -> VideoResult:
        p = self.planned
        result = VideoResult(
            uri=p.job.uri,
            output=p.job.output,
            status="done",
            frames_in=p.n_frames,
            chunks=p.n_chunks,
            reused_chunks=len(p.reused),
            note=p.note,
            chunk_stats=sorted(self.chunk_stats, key=lambda c: c["index"]),
        )
        result.gpu_samples = self.gpu_samples
        result.gpu_notes = sorted(n for n in self.gpu_notes if n)
        if self.error is None:
            try:
                if p.tensor:
                    result.frames_out = self._write_table()
                    if result.frames_out != p.n_out:
                        raise errors.RaypipeError(
                            f"the table has {result.frames_out} rows, {p.n_out} frames were sampled"
                        )
                else:
                    tags = {}
                    if p.provenance is not None:
                        tags = provenance_tags(p.provenance, output_format(p.job.output))
                    assemble(self._segments(), p.job.output, p.job.uri, tags=tags)
                    result.frames_out = p.n_frames
            except Exception as e:  # noqa: BLE001 - the video fails alone
                self.error = (type(e).__name__, " ".join(str(e).split()))
        if self.error is not None:
            result.status, (result.error_type, result.error_message) = "failed", self.error
            result.error_detail = self.error_detail
        storage.remove_tree(p.work_dir)
        result.seconds = time.monotonic() - self.started
        return result


def _iter_rows(ds: ray.data.Dataset, *, verbose: bool) -> Iterator[Row]:
    try:
        yield from iter_rows(ds, verbose=verbose)
    except RaypipeError:
        raise
    except Exception as e:  # noqa: BLE001 - Ray wraps worker errors; surface ours typed
        cause = raypipe_cause(e)
        if cause is not None:
            raise cause from e
        raise


def raypipe_cause(e: BaseException) -> RaypipeError | None:
    """The first :class:`RaypipeError` in ``e``'s chain. Ray wraps worker exceptions (its
    ``RayTaskError(X)`` even subclasses X); the original, in ``.cause``, is preferred."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [e]
    while stack:
        err = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        wrapped = getattr(err, "cause", None)
        if isinstance(wrapped, BaseException):
            stack.append(wrapped)
            continue
        if isinstance(err, RaypipeError):
            return err
        stack.extend([err.__cause__, err.__context__])
    return None


def error_of(result: VideoResult) -> RaypipeError:
    """The typed exception a failed result stands for (rebuilt from its type name); its
    ``detail`` attribute holds the worker's traceback when there is one."""
    cls = getattr(errors, result.error_type, None)
    if isinstance(cls, type) and issubclass(cls, RaypipeError):
        error = cls(result.error_message)
    else:
        error = RaypipeError(f"{result.error_type}: {result.error_message}")
    error.detail = result.error_detail  # type: ignore[attr-defined]
    return error
