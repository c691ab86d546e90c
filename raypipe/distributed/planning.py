"""Planning one video: probe, chunk plan, and what a resumed run may skip or reuse.

:func:`plan_video` is pure planning (no Ray): it probes the input, cuts it into chunks and
checks the work a previous run left (a finished output, the segments of a cut-off video)
against this run's reuse key (:mod:`raypipe.reuse`). :func:`plan_stage` is the same as a
Ray Data stage: one job row in, the video's rows out: one *chunk row* per chunk still to
process, the first also carrying what the driver and the assembly task need to know about
the video (:class:`VideoFacts`), or, when no chunk is left to process, one *video row*
with only the facts. Archives run it inside the dataset, so the first
chunks start as soon as the first video is planned, whatever the archive's size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raypipe import errors, storage
from raypipe.config import ChunkConfig, EncodeConfig
from raypipe.distributed.chunk_task import (
    RUN_DIR_PREFIX,
    RUN_FILE,
    Row,
    placeholder_row,
    remove_work,
    run_dir_for,
    work_dir_for,
    work_root,
)
from raypipe.distributed.stages import chunk_row
from raypipe.errors import RaypipeError, StorageError, one_line, with_worker_traceback
from raypipe.infer.temporal import NONE, Temporal
from raypipe.media.encode import output_size_problem
from raypipe.media.jumps import Jump, to_text
from raypipe.media.mux import constant_rate_problem
from raypipe.media.picture import PictureFormat
from raypipe.media.plan import chunk_offsets, plan_chunks, sampled_indices
from raypipe.media.probe import make_video_id, probe
from raypipe.media.source import open_input
from raypipe.reuse import (
    PROVENANCE_TAG,
    Provenance,
    ReuseKey,
    provenance_from_tags,
    source_identity,
)

if TYPE_CHECKING:
    from raypipe.infer.tiling import FrameGeometry  # cv2: imported where a model is


@dataclass(frozen=True)
class ModelFacts:
    """What planning needs to know of the model: ``tensor``, whether it outputs analysis
    tables (of the sampled frames) instead of frames; ``temporal``, what it needs around
    each frame (chunks are planned with that much context; an interpolating model outputs
    twice the frames); ``output_scale``, the side of its output frames over the input's,
    so that ``chunk_mib`` counts them (:meth:`ChunkConfig.frames_per_chunk`; ``None``: not
    known, counted as 1) and a size the encoder cannot take fails at planning;
    ``geometry``, how frames reach an image model, so that frames it cannot take (a fixed
    224x224 input, no ``resize``) fail at planning, not at the first chunk's inference."""

    tensor: bool = False
    temporal: Temporal = NONE
    output_scale: float | None = 1.0
    geometry: FrameGeometry | None = None


@dataclass(frozen=True)
class VideoJob:
    """One input and where its output goes."""

    uri: str
    output: str
    error: str = ""  # set when the job is invalid before it starts (e.g. output escapes)
    output_problem: str = ""  # the output cannot hold this run's video (checked after probing)
    listed_before: int = 0  # how often the same input was listed before this job

    @property
    def video_id(self) -> str:
        """The run's id of this job: the input's, plus which listing of it when the input is
        listed more than once, so a refused duplicate never shares the first job's id."""
        base = make_video_id(self.uri)
        return f"{base}.{self.listed_before}" if self.listed_before else base


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
    assembly_seconds: float = 0.0
    assembly_pid: int = 0  # the process that assembled the output (0: none did)
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
    left_out: tuple[str, ...] = ()  # source streams the output does not get, and why
    jumps: tuple[Jump, ...] = ()  # the source clock's jumps (raypipe.media.jumps)
    source_id: str = ""  # raypipe.reuse.source_identity of the input
    provenance: Provenance | None = None  # what makes this video's segments and output
    note: str = ""


def plan_video(
    job: VideoJob,
    chunk: ChunkConfig,
    *,
    resume: bool,
    key: ReuseKey | None,
    model: ModelFacts = ModelFacts(),
    encode: EncodeConfig | None = None,
) -> PlannedVideo:
    """Probe and plan one video; decide what a resumed run can skip or reuse. Never raises
    for a bad input: the error goes into the result. ``key``: what makes segments and
    outputs (:mod:`raypipe.reuse`); earlier work is reused only when it records the same key
    and source. ``None`` (a fresh run, no resume): the caller sets ``provenance`` from
    ``source_id`` once it knows the key. ``model``: what the plan needs of the model.
    ``encode``: the run's encoder settings, so that an output frame size the encoder cannot
    take fails here, before any chunk is decoded (``None``: not checked)."""
    if resume and key is None:
        raise TypeError("plan_video: a resumed run needs the reuse key")
    started = time.monotonic()
    tensor, temporal = model.tensor, model.temporal
    planned = PlannedVideo(job=job, video_id=job.video_id, tensor=tensor)
    try:
        if job.error:
            raise errors.ConfigError(job.error)
        info = probe(job.uri)
        if job.output_problem:  # after the probe: a bad input says more
            raise errors.ConfigError(job.output_problem)
        timing = "" if tensor else constant_rate_problem(info, job.output)
        if timing:
            raise errors.ConfigError(f"output '{os.path.basename(job.output)}': {timing}")
        if encode is not None and job.output and not tensor:
            size = output_size_problem(
                encode.for_output(job.output), info.picture_format, model.output_scale
            )
            if size:
                raise errors.ConfigError(f"output '{os.path.basename(job.output)}': {size}")
        planned.source_id = source_identity(job.uri)
        if key is not None:
            planned.provenance = Provenance.of(key, planned.source_id)
        scale = 1.0 if model.output_scale is None else model.output_scale
        plan = plan_chunks(info, chunk, context=temporal.context, output_scale=scale)
        planned.n_frames, planned.n_chunks = info.n_frames, len(plan)
        planned.picture = info.picture_format
        planned.left_out = info.left_out
        planned.jumps = info.jumps
        planned.width, planned.height = planned.picture.upright_size
        if model.geometry is not None:
            model.geometry.check_frames(planned.height, planned.width, image=not tensor)
        keeps: list[list[int] | None] = [None] * len(plan)
        if tensor and chunk.samples:
            keeps = list(chunk_offsets(plan, sampled_indices(info, chunk)))
        planned.n_out = temporal.interpolate * sum(
            c.n_frames if k is None else len(k) for c, k in zip(plan.chunks, keeps)
        )
        if job.output:
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
        root = work_dir_for(job.output) if job.output else ""
        planned.work_dir = root
        if root and provenance is not None:
            planned.work_dir = run_dir_for(job.output, provenance)
        done: set[str] = set()
        if resume and provenance is not None:
            done, why = _reusable_segments(root, planned.work_dir, provenance)
            if why:
                notes.append(f"segments not reused: {why}")
        elif root:
            storage.remove_tree(root)
        planned.note = "; ".join(notes)
        skip = done | {c.chunk_id for c, k in zip(plan.chunks, keeps) if k == []}
        planned.reused = sorted(c.index for c in plan.chunks if c.chunk_id in skip)
        firsts = [0]
        for c in plan.chunks:
            firsts.append(firsts[-1] + c.n_frames)
        planned.rows = [
            chunk_row(
                info,
                c,
                first_index=firsts[c.index],
                keep=keeps[c.index],
                work_dir=planned.work_dir,
                interpolate=temporal.interpolate,
            )
            for c in plan.chunks
            if c.chunk_id not in skip
        ]
    except Exception as e:  # noqa: BLE001 - one bad input fails alone
        planned.result = _failed(job, e, time.monotonic() - started)
    return planned


def _failed(job: VideoJob, error: BaseException, seconds: float = 0.0) -> VideoResult:
    """The result of ``job``'s video failed with ``error``."""
    return VideoResult(
        uri=job.uri,
        output=job.output,
        status="failed",
        error_type=type(error).__name__,
        error_message=one_line(error),
        seconds=seconds,
    )


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


def _reusable_segments(root: str, work_dir: str, provenance: Provenance) -> tuple[set[str], str]:
    """Chunk ids whose segments an earlier run with the same key and source left in its
    folder ``work_dir`` of the work directory ``root`` (:func:`run_dir_for`), and why none
    are reusable when another run's segments are there (other settings or source: those
    are removed, as are the loose files of the layout before runs had folders)."""
    names = storage.list_names(root)
    own = storage.split(work_dir)[1]
    segments: set[str] = set()
    why = ""
    for name in (n for n in names if n.startswith(RUN_DIR_PREFIX)):
        folder = storage.join(root, name)
        held, other = _recorded_work(folder, storage.list_names(folder), provenance)
        if name == own and not other:
            segments = held
            continue
        why = why or (other if held else "")
        storage.remove_tree(folder)  # nothing there is reusable
    loose = [n for n in names if not n.startswith(RUN_DIR_PREFIX)]
    if loose:  # files (run.json, segments) of the layout before runs had folders
        held, other = _recorded_work(root, loose, provenance)
        why = why or (other if held else "")
        for name in loose:
            try:
                storage.remove_file(storage.join(root, name))
            except (IsADirectoryError, PermissionError):  # a folder (macOS says EPERM)
                storage.remove_tree(storage.join(root, name))
    return segments, why


def _recorded_work(folder: str, names: list[str], provenance: Provenance) -> tuple[set[str], str]:
    """The chunk ids of the segments among ``names`` in ``folder``, and why its run.json
    does not record ``provenance`` (``""``: it does)."""
    held = {n[: -len(".rpseg")] for n in names if n.endswith(".rpseg")}
    recorded = None
    if RUN_FILE in names:
        try:
            recorded = Provenance.parse(storage.read_bytes(storage.join(folder, RUN_FILE)))
        except OSError:
            recorded = None
    return held, provenance.why_not(recorded, what="work directory")


@dataclass(frozen=True, kw_only=True)
class VideoFacts:
    """What the driver and the assembly task need to know about one planned video: the
    ``video`` column of its first chunk row (or of its video row: :func:`video_rows`).

    ``status``: ``planned`` (chunks to process or reused), ``skipped`` (finished before) or
    ``failed`` (``error_type``/``error_message`` say why). ``reused``: indices of the
    chunks whose segments are already in ``work_dir`` (or that sample no frame).
    """

    video_id: str
    uri: str
    output: str
    status: str
    error_type: str = ""
    error_message: str = ""
    n_frames: int = 0
    n_out: int = 0
    n_chunks: int = 0
    reused: tuple[int, ...] = ()
    note: str = ""
    work_dir: str = ""
    tensor: bool = False
    provenance: str = ""  # Provenance.to_text(): what the output's tags record
    picture: str = ""  # PictureFormat JSON (what the encoder is asked to keep)
    left_out: tuple[str, ...] = ()  # source streams the output does not get, and why
    jumps: str = ""  # the source clock's jumps (raypipe.media.jumps.to_text)
    seconds: float = 0.0  # planning time

    @classmethod
    def of(cls, planned: PlannedVideo) -> VideoFacts:
        result = planned.result
        return cls(
            video_id=planned.video_id,
            uri=planned.job.uri,
            output=planned.job.output,
            status="planned" if result is None else result.status,
            error_type=result.error_type if result else "",
            error_message=result.error_message if result else "",
            n_frames=planned.n_frames or (result.frames_in if result else 0),
            n_out=planned.n_out or (result.frames_out if result else 0),
            n_chunks=planned.n_chunks or (result.chunks if result else 0),
            reused=tuple(planned.reused),
            note=planned.note,
            work_dir=planned.work_dir,
            tensor=planned.tensor,
            provenance=planned.provenance.to_text(part_digests=True) if planned.provenance else "",
            picture=planned.picture.to_json() if planned.picture else "",
            left_out=tuple(planned.left_out),
            jumps=to_text(planned.jumps),
            seconds=result.seconds if result else 0.0,
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> VideoFacts:
        doc = json.loads(text)
        doc["reused"] = tuple(doc.get("reused", ()))
        doc["left_out"] = tuple(doc.get("left_out", ()))
        return cls(**doc)

    def result(self) -> VideoResult:
        """The result of a video that ends at planning (skipped or failed)."""
        return VideoResult(
            uri=self.uri,
            output=self.output,
            status=self.status,
            error_type=self.error_type,
            error_message=self.error_message,
            frames_in=self.n_frames,
            frames_out=self.n_out if self.status == "skipped" else 0,
            chunks=self.n_chunks,
            seconds=self.seconds,
        )


def video_rows(planned: PlannedVideo) -> list[Row]:
    """The rows of a planned video: its chunk rows, the first of them carrying the video's
    facts (its ``video`` column, :class:`VideoFacts`), so a one-chunk video is one task per
    stage; a video with no chunk to process (skipped, failed, every chunk reused) is one
    video row."""
    if not planned.rows:
        return [video_row(planned)]
    first, *rest = planned.rows
    return [{**first, "video": VideoFacts.of(planned).to_json()}, *rest]


def video_row(planned: PlannedVideo) -> Row:
    """The row that tells the driver about ``planned`` (see :class:`VideoFacts`); it has a
    chunk row's columns, so every block of the dataset has one schema."""
    return {**placeholder_row(planned.video_id, planned.job.uri), **video_columns(planned)}


def video_columns(planned: PlannedVideo) -> Row:
    """A video row's own columns: its facts, and a failed video's error where a chunk row
    has its own (``raypipe.data``'s docs say a video that cannot be read is a row with
    ``error_type`` set; it was only inside the facts' JSON: a sweep)."""
    columns: Row = {"kind": "video", "video": VideoFacts.of(planned).to_json()}
    result = planned.result
    if result is not None and result.status == "failed":
        columns.update(error_type=result.error_type, error_message=result.error_message)
    return columns


def job_row(job: VideoJob) -> Row:
    """A job as a dataset row (the input of :func:`plan_stage`)."""
    return dataclasses.asdict(job)


def plan_stage(
    row: Row,
    *,
    chunk: ChunkConfig,
    resume: bool,
    key: ReuseKey | None,
    model: ModelFacts,
    encode: EncodeConfig | None = None,
) -> list[Row]:
    """Ray Data's plan stage: one job row in, the video's rows out (:func:`video_rows`).
    ``key`` ``None``: no provenance (the caller binds outputs later, see raypipe.data)."""
    job = VideoJob(**{f.name: row[f.name] for f in dataclasses.fields(VideoJob)})
    planned = plan_video(job, chunk, resume=resume, key=key, model=model, encode=encode)
    if planned.work_dir and planned.provenance is not None and planned.result is None:
        try:
            write_run_record(planned)
        except StorageError as e:  # the video fails alone, as a row (it was a Ray traceback)
            planned.rows, planned.result = [], _failed(job, e)
    return video_rows(planned)


def write_run_record(planned: PlannedVideo) -> None:
    """Record in the work directory what its segments will be made of (key and source):
    what a resumed run checks before it reuses them. Where it cannot be written, the run's
    folder is removed where this call made it (a full disk left it empty; a sweep), kept
    where it holds an earlier run's segments to reuse."""
    assert planned.provenance is not None
    record = planned.provenance.to_text(with_parts=True).encode()
    made = not storage.exists(planned.work_dir)
    try:
        storage.makedirs(planned.work_dir)
        storage.write_bytes(storage.join(planned.work_dir, RUN_FILE), record)
    except BaseException as e:
        if made:
            with contextlib.suppress(OSError):
                remove_work(planned.work_dir)
        if isinstance(e, StorageError):
            raise  # it names the path and why already
        if isinstance(e, PermissionError):  # a read-only bucket: "PermissionError ... (unexpected)"
            raise StorageError(
                f"cannot write in '{work_root(planned.work_dir)}' ({e}): these credentials "
                "may not write there; raypipe writes, and deletes, its work folders beside "
                "the outputs"
            ) from e
        if not isinstance(e, OSError):
            raise
        # the video fails alone (it ended the whole archive; a sweep)
        why = f"cannot make the work folder '{work_root(planned.work_dir)}': {e.strerror or e}"
        if e.errno == errno.ENAMETOOLONG:
            why += (
                f"; raypipe's work folder and staging files beside an output add up to "
                f"{storage.NAME_EXTRA} characters to its name: name the output at most "
                f"{storage.NAME_MAX - storage.NAME_EXTRA} characters long"
            )
        raise StorageError(why) from e


def error_of(result: VideoResult) -> RaypipeError:
    """The typed exception a failed result stands for (rebuilt from its type name); its
    ``detail`` attribute holds the worker's traceback when there is one."""
    cls = getattr(errors, result.error_type, None)
    if isinstance(cls, type) and issubclass(cls, RaypipeError):
        error = cls(result.error_message)
    else:
        error = RaypipeError(f"{result.error_type}: {result.error_message}")
    with_worker_traceback(error, result.error_detail)
    return error
