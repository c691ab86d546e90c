"""The chunk task: one chunk's work from the plan to its segment, as one typed object.

Ray Data moves rows (flat dicts of plain columns); a :class:`ChunkTask` is what a chunk
row means. It is encoded into a row (:meth:`ChunkTask.to_row`) and read back
(:meth:`ChunkTask.from_row`) here and nowhere else, so the columns' encodings (no seek
keyframe, every frame kept, no context, no rate) live in one place, and so does the name
of the chunk's segment file in its video's work directory (:meth:`ChunkTask.segment_uri`).

A row also has a ``kind``: ``chunk`` for a task, ``video`` for a row that only carries a
video's facts to the driver (a video with no chunk left to process; otherwise the facts
ride in the ``video`` column of its first chunk row: :mod:`raypipe.distributed.planning`).
A video row has a chunk row's columns with neutral values (:func:`placeholder_row`), so
every block of the dataset keeps one schema, and passes every stage as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from raypipe import storage
from raypipe.errors import ConfigError
from raypipe.media.jumps import Jump, from_text, to_text
from raypipe.media.picture import PictureFormat
from raypipe.media.plan import Chunk, Context
from raypipe.media.probe import VideoInfo
from raypipe.media.source import is_local, local_path

if TYPE_CHECKING:
    from raypipe.reuse import Provenance

Row = dict[str, Any]

SEGMENT_SUFFIX = ".rpseg"


def segment_uri(work_dir: str, chunk_id: str) -> str:
    """Where chunk ``chunk_id``'s segment lives in its video's work directory."""
    from raypipe import storage

    return storage.join(work_dir, f"{chunk_id}{SEGMENT_SUFFIX}")


WORK_SUFFIX = ".raypipe-work"


def work_dir_for(output: str) -> str:
    """The work directory of ``output``: hidden, next to it, deleted on success."""
    parent, name = storage.split(output)
    return storage.join(parent, f".{name}{WORK_SUFFIX}")


RUN_DIR_PREFIX = "run-"
RUN_FILE = "run.json"
"""A run's folder's record of what its segments are made of (planning.write_run_record),
written before any of its chunks is dispatched."""


def run_dir_for(output: str, provenance: Provenance) -> str:
    """Where a run whose segments record ``provenance`` (the reuse key and source, named
    by its text with the key's parts, as the folder's ``run.json`` records it) writes
    ``output``'s segments: a folder of its
    own inside the work directory. Two runs on one output at once (nested OUTPUT_DIRs, a
    ``raypipe run`` into an archive's folder) with other settings wrote segments of the
    same names into one folder, and each assembled an output of both models' frames,
    which reruns then skipped as finished (a sweep); now each reads only its own."""
    text = provenance.to_text(with_parts=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return storage.join(work_dir_for(output), f"{RUN_DIR_PREFIX}{digest}")


def work_root(work_dir: str) -> str:
    """The work directory (next to the output) that holds ``work_dir``, a run's folder
    (:func:`run_dir_for`); ``work_dir`` itself where it is a whole work directory."""
    parent, name = storage.split(work_dir)
    if name.startswith(RUN_DIR_PREFIX) and parent.endswith(WORK_SUFFIX):
        return parent
    return work_dir


LOCK_SUFFIX = ".raypipe-lock"
"""A local video output's lock file while a run writes it: ``.NAME.raypipe-lock`` beside
it (as long a name as the work folder's, ``.NAME.raypipe-work``)."""


@contextlib.contextmanager
def output_held(output: str, *, tensor: bool) -> Iterator[None]:
    """Hold a local ``output`` for this run: a second run on it fails at once, naming the
    first. Two runs on one output shared its work folder, and the first to end removed it
    under the other, which failed with "the work folder ... was removed" and a wrong guess
    at why. An analysis table (``tensor``: ``OUTPUT/video_id=ID/part-0.parquet``) is held
    by a lock in OUTPUT named for its video, ``.video_id=ID.raypipe-lock`` (hidden:
    Parquet readers skip it): two runs of one video into one OUTPUT both said done, and
    one table was the other's (a sweep); other videos' runs into it go on. OUTPUT is made
    for it, and removed after if it is left empty. Object stores hold no lock."""
    if not is_local(output):
        yield
        return
    folder, name = os.path.split(local_path(output))
    shown = f"output '{output}'"
    if tensor:  # the lock beside the video's partition folder, in OUTPUT
        folder, name = os.path.split(folder)
        shown = f"the table of this video in '{folder}'"
    busy = (
        f"{shown} is being written by another raypipe run ({{who}}); wait for it to end, or "
        "give this run another output"
    )
    made = tensor and not os.path.isdir(folder)
    if made:  # read-only, or a file on the way: an OSError the CLI called unexpected (a sweep)
        problem = storage.writable_dir_problem(folder, make=True)
        if problem:
            raise ConfigError(f"output '{folder}': {problem}")
    try:
        with storage.held(os.path.join(folder, f".{name}{LOCK_SUFFIX}"), busy):
            yield
    finally:
        if tensor:  # the video's partition, left empty by a failed run (a full disk; a sweep)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(folder, name))
        if made:
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only where the run left it empty (it failed)


def remove_work(work_dir: str) -> int:
    """Delete ``work_dir`` (:func:`run_dir_for`'s, or a whole work directory) and the work
    directory around a run's folder once no other run's is in it; returns the files left
    (:func:`raypipe.storage.remove_tree`)."""
    left = storage.remove_tree(work_dir)
    root = work_root(work_dir)
    if root != work_dir:
        storage.remove_empty_dirs(root)
    return left


def output_of(work_dir: str) -> str:
    """The output whose work directory, or run's folder in it, is ``work_dir``
    (:func:`work_dir_for`, :func:`run_dir_for` undone)."""
    parent, name = storage.split(work_root(work_dir))
    return storage.join(parent, name.removeprefix(".").removesuffix(WORK_SUFFIX))


@dataclass(frozen=True, kw_only=True)
class ChunkTask:
    """Decode ``chunk`` of ``uri`` (its frames, plus context frames for a temporal model),
    then write its segment into ``work_dir``.

    ``stream_index``, ``width``/``height`` (coded px), ``time_base``, ``rate`` (the
    average frame rate; 0 when unknown) and ``picture`` are the source's, as probed.
    ``first_index``: display index of the chunk's first frame in the video. ``keep``: the
    offsets (in the chunk) of the frames to process, for analysis sampling; ``None``:
    every frame. ``interpolate``: 2 when the model doubles the frames. ``jumps``: the
    source clock's jumps, which the decode maps its frames' times through
    (:mod:`raypipe.media.jumps`). ``frame_ticks``: the video's
    :attr:`~raypipe.media.probe.VideoInfo.frame_ticks` (1 for an interpolating model's
    output, whose new frames fall between them).
    """

    uri: str
    chunk: Chunk
    stream_index: int
    width: int
    height: int
    time_base: Fraction
    rate: Fraction
    picture: PictureFormat
    first_index: int = 0
    keep: tuple[int, ...] | None = None
    interpolate: int = 1
    work_dir: str = ""
    jumps: tuple[Jump, ...] = ()
    frame_ticks: Fraction = Fraction(1)

    @classmethod
    def of(
        cls,
        info: VideoInfo,
        chunk: Chunk,
        *,
        first_index: int = 0,
        keep: list[int] | tuple[int, ...] | None = None,
        interpolate: int = 1,
        work_dir: str = "",
    ) -> ChunkTask:
        """The task of ``chunk`` of the probed video ``info``."""
        return cls(
            uri=info.uri,
            chunk=chunk,
            stream_index=info.stream_index,
            width=info.width,
            height=info.height,
            time_base=Fraction(info.time_base_num, info.time_base_den),
            rate=Fraction(info.rate_num, info.rate_den or 1),
            picture=info.picture_format,
            first_index=first_index,
            keep=None if keep is None else tuple(keep),
            interpolate=interpolate,
            work_dir=work_dir,
            jumps=info.jumps,
            frame_ticks=info.frame_ticks if interpolate == 1 else Fraction(1),
        )

    @property
    def chunk_id(self) -> str:
        return self.chunk.chunk_id

    @property
    def segment_uri(self) -> str:
        return segment_uri(self.work_dir, self.chunk_id)

    def frame_indices(self) -> np.ndarray:
        """Display indices (in the video) of the frames the task processes."""
        offsets = np.arange(self.chunk.n_frames) if self.keep is None else np.asarray(self.keep)
        return (self.first_index + offsets).astype(np.int64)

    def source(self) -> VideoInfo:
        """The source as :func:`raypipe.media.decode.decode_chunk` reads it: where and
        which stream, its size, time base, rate and picture (no frame list: the chunk
        says which frames)."""
        return VideoInfo(
            uri=self.uri,
            video_id=self.chunk.video_id,
            format_name="",
            codec="",
            stream_index=self.stream_index,
            width=self.width,
            height=self.height,
            pix_fmt=None,
            time_base_num=self.time_base.numerator,
            time_base_den=self.time_base.denominator,
            rate_num=self.rate.numerator,
            rate_den=self.rate.denominator,
            rotation_degrees=0,
            pts=(),
            keyframe_pts=(),
            picture=self.picture,
            jumps=self.jumps,
        )

    def to_row(self) -> Row:
        """The task as a chunk row (with empty error columns)."""
        c = self.chunk
        return {
            "kind": "chunk",
            "video": "",
            "work_dir": self.work_dir,
            "first_index": self.first_index,
            "keep": "" if self.keep is None else ",".join(map(str, self.keep)),
            "chunk_id": c.chunk_id,
            "video_id": c.video_id,
            "index": c.index,
            "start_pts": c.start_pts,
            "end_pts": c.end_pts,
            "n_frames": c.n_frames,
            "seek_pts": -1 if c.seek_pts is None else c.seek_pts,
            "last_pts": c.last_pts,
            "uri": self.uri,
            "stream_index": self.stream_index,
            "width": self.width,
            "height": self.height,
            "tb_num": self.time_base.numerator,
            "tb_den": self.time_base.denominator,
            "rate_num": self.rate.numerator,
            "rate_den": self.rate.denominator,
            "picture": self.picture.to_json(),
            "context": "" if c.context is None else c.context.to_json(),
            "interpolate": self.interpolate,
            "jumps": to_text(self.jumps),
            "frame_ticks": str(self.frame_ticks),  # "1001/30": Matroska's ms at 29.97 fps
            "error_type": "",
            "error_message": "",
        }

    @classmethod
    def from_row(cls, row: Row) -> ChunkTask:
        """The task a chunk row (at any stage) carries."""
        seek, keep = int(row["seek_pts"]), str(row["keep"])
        chunk = Chunk(
            video_id=str(row["video_id"]),
            index=int(row["index"]),
            start_pts=int(row["start_pts"]),
            end_pts=int(row["end_pts"]),
            n_frames=int(row["n_frames"]),
            seek_pts=None if seek < 0 else seek,
            last_pts=int(row["last_pts"]),
            context=context_of(row),
        )
        return cls(
            uri=str(row["uri"]),
            chunk=chunk,
            stream_index=int(row["stream_index"]),
            width=int(row["width"]),
            height=int(row["height"]),
            time_base=Fraction(int(row["tb_num"]), int(row["tb_den"])),
            rate=Fraction(int(row["rate_num"]), int(row["rate_den"]) or 1),
            picture=PictureFormat.from_json(str(row["picture"])),
            first_index=int(row["first_index"]),
            keep=tuple(int(k) for k in keep.split(",")) if keep else None,
            interpolate=int(row.get("interpolate") or 1),
            jumps=from_text(str(row.get("jumps") or "")),
            work_dir=str(row["work_dir"]),
            frame_ticks=Fraction(str(row.get("frame_ticks") or 1)),
        )


def context_of(row: Row) -> Context | None:
    """The context (frames decoded around the chunk) a row's task has, if any."""
    return Context.from_json(str(row.get("context") or ""))


def placeholder_row(video_id: str, uri: str) -> Row:
    """A chunk row's columns with neutral values, for rows that are not a chunk task."""
    task = ChunkTask(
        uri=uri,
        chunk=Chunk(video_id=video_id, index=-1, start_pts=0, end_pts=1, n_frames=0,
                    seek_pts=None, last_pts=0),
        stream_index=0, width=2, height=2, time_base=Fraction(1), rate=Fraction(0),
        picture=PictureFormat(coded_width=2, coded_height=2),
    )  # fmt: skip
    return task.to_row()


def is_work(row: Row) -> bool:
    """Whether a stage has work to do on ``row``: a chunk task without an error."""
    return row["kind"] == "chunk" and not row["error_type"]
