"""Plan: cut a probed video into chunks, a pure function over :class:`VideoInfo`.

A chunk is a half-open display range ``[start_pts, end_pts)``: ``end_pts`` is the next
chunk's first pts, and for the last chunk the end of the video's last frame (its pts plus
its duration), so a chunk's frames' durations are the differences of its pts and its end.
Chunks start on a keyframe (so each decodes on its own) and group whole GOPs until they
reach about ``chunk_frames`` (fewer for large frames: :meth:`ChunkConfig.frames_per_chunk`);
a GOP longer than that is split when
:attr:`ChunkConfig.split_gops` is set, and the pieces after its first decode from the
GOP's keyframe (``seek_pts``) and drop the frames before their start, unless the decode
task process goes on from the piece before (``decode_chunk``'s ``carry``). Chunk ids are
``{video_id}-{index:06d}``.

Temporal models (:mod:`raypipe.infer.temporal`) need frames around each chunk: with
``context=(before, after)`` every chunk also gets a :class:`Context`, the display range of
its frames plus up to ``before`` frames before it and ``after`` after it (fewer at the
video's edges), taken from the neighbouring chunks' ranges and decoded from the keyframe at
or before the first of them (the GOP start that holds it). The chunk's own range, and so
what it outputs, does not change; the extra frames decoded are bounded by the context, not
by the video.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

from raypipe.config import ChunkConfig
from raypipe.media.probe import VideoInfo


def chunk_id(video_id: str, index: int) -> str:
    """The id of chunk ``index`` of ``video_id``: ``{video_id}-{index:06d}``."""
    return f"{video_id}-{index:06d}"


@dataclass(frozen=True, kw_only=True)
class Context:
    """A chunk's frames plus the context frames a temporal model needs around them: the
    display range ``[start_pts, end_pts)`` of ``before`` + the chunk's + ``after`` frames."""

    before: int  # context frames before the chunk's first frame
    after: int  # context frames after its last frame
    start_pts: int  # [start_pts, end_pts), display order, stream time base
    end_pts: int
    seek_pts: int | None  # keyframe at or before start_pts; None: from the start
    last_pts: int  # pts of the range's last frame

    def __post_init__(self) -> None:
        if self.before < 0 or self.after < 0 or not self.start_pts <= self.last_pts < self.end_pts:
            raise ValueError(f"inconsistent context {self}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Context | None:
        """The context :meth:`to_json` wrote; ``""`` is none."""
        return cls(**json.loads(text)) if text else None


@dataclass(frozen=True, kw_only=True)
class Chunk:
    """One unit of work: frames with ``start_pts <= pts < end_pts`` of one video, and the
    context frames decoded around them for a temporal model (``None``: none)."""

    video_id: str
    index: int
    start_pts: int  # [start_pts, end_pts), display order, stream time base
    end_pts: int
    n_frames: int
    seek_pts: int | None  # keyframe to seek to before decoding; None: from the start
    last_pts: int  # pts of the chunk's last frame: the decoder's last frame must have it
    context: Context | None = None

    @property
    def chunk_id(self) -> str:
        return chunk_id(self.video_id, self.index)

    @property
    def decode_range(self) -> Chunk:
        """What to decode: the chunk itself, or its frames with their context."""
        c = self.context
        if c is None:
            return self
        return Chunk(
            video_id=self.video_id,
            index=self.index,
            start_pts=c.start_pts,
            end_pts=c.end_pts,
            n_frames=c.before + self.n_frames + c.after,
            seek_pts=c.seek_pts,
            last_pts=c.last_pts,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class ChunkPlan:
    """The chunks of one video, in index order; they cover every frame exactly once."""

    video_id: str
    n_frames: int
    chunks: tuple[Chunk, ...]

    def __len__(self) -> int:
        return len(self.chunks)


def gop_ranges(info: VideoInfo) -> list[tuple[int, int]]:
    """Display-index ranges ``[a, b)`` of the GOPs, each starting at a keyframe.

    Frames shown before the first keyframe (rare: streams cut mid-GOP) join the first GOP.
    """
    index_of = {pts: i for i, pts in enumerate(info.pts)}
    starts = sorted({index_of[k] for k in info.keyframe_pts if k in index_of} | {0})
    ends = starts[1:] + [info.n_frames]
    return list(zip(starts, ends))


def plan_chunks(
    info: VideoInfo,
    config: ChunkConfig | None = None,
    *,
    context: tuple[int, int] = (0, 0),
    output_scale: float = 1.0,
) -> ChunkPlan:
    """Cut ``info`` into keyframe-aligned chunks of about ``config.chunk_frames`` frames, or
    fewer where ``config.chunk_mib`` caps them, counting the model's output frames too
    (``output_scale``: their side over the input's; 0: none); ``context``: frames (before,
    after) each chunk is decoded with (see the module docstring)."""
    config = config or ChunkConfig()
    if len(context) != 2 or min(context) < 0:
        raise ValueError(f"context must be two frame counts >= 0, got {context!r}")
    target = config.frames_per_chunk(info.width, info.height, output_scale=output_scale)
    pieces: list[tuple[int, int, int | None]] = []  # (a, b, seek display index or None)
    current: tuple[int, int] | None = None

    def seek_index(a: int) -> int | None:
        return None if a == 0 else a

    for a, b in gop_ranges(info):
        length = b - a
        if current is not None and (current[1] - current[0]) + length > target:
            pieces.append((current[0], current[1], seek_index(current[0])))
            current = None
        if length > target and config.split_gops:
            n_parts = -(-length // target)
            bounds = [a + (length * k) // n_parts for k in range(n_parts + 1)]
            for lo, hi in zip(bounds, bounds[1:]):
                pieces.append((lo, hi, seek_index(a)))
        elif current is None:
            current = (a, b)
        else:
            current = (current[0], b)
    if current is not None:
        pieces.append((current[0], current[1], seek_index(current[0])))

    pts = info.pts
    gop_starts = [a for a, _ in gop_ranges(info)]
    chunks = tuple(
        Chunk(
            video_id=info.video_id,
            index=i,
            start_pts=pts[a],
            end_pts=pts[b] if b < len(pts) else info.end_pts,
            n_frames=b - a,
            seek_pts=None if s is None else pts[s],
            last_pts=pts[b - 1],
            context=_context(info, gop_starts, a, b, context),
        )
        for i, (a, b, s) in enumerate(pieces)
    )
    return ChunkPlan(video_id=info.video_id, n_frames=info.n_frames, chunks=chunks)


def _context(
    info: VideoInfo, gop_starts: list[int], a: int, b: int, context: tuple[int, int]
) -> Context | None:
    """The :class:`Context` of the chunk of display indices ``[a, b)``, or None."""
    lo, hi = max(0, a - context[0]), min(info.n_frames, b + context[1])
    if (lo, hi) == (a, b):
        return None
    seek = max(g for g in gop_starts if g <= lo)  # the GOP that holds the first frame
    pts = info.pts
    return Context(
        before=a - lo,
        after=hi - b,
        start_pts=pts[lo],
        end_pts=pts[hi] if hi < len(pts) else info.end_pts,
        seek_pts=None if seek == 0 else pts[seek],
        last_pts=pts[hi - 1],
    )


def sampled_indices(info: VideoInfo, config: ChunkConfig) -> list[int]:
    """Display indices of the frames an analysis run processes.

    ``every_n_frames`` N: frames 0, N, 2N, ... ``sample_fps`` F: the first frame at or after
    each multiple of 1/F seconds from the first frame (so variable frame rates sample by
    time, not by count). Without either: every frame.
    """
    if config.sample_fps is not None:
        tb, first = info.time_base, info.pts[0]
        picked, last_bucket = [], -1
        for i, pts in enumerate(info.pts):
            bucket = int((pts - first) * tb * Fraction(config.sample_fps).limit_denominator(10**6))
            if bucket > last_bucket:
                picked.append(i)
                last_bucket = bucket
        return picked
    return list(range(0, info.n_frames, config.every_n_frames))


def chunk_offsets(plan: ChunkPlan, indices: list[int]) -> list[list[int]]:
    """For each chunk, the offsets (within the chunk) of the ``indices`` that fall in it."""
    offsets: list[list[int]] = [[] for _ in plan.chunks]
    starts = [0]
    for c in plan.chunks:
        starts.append(starts[-1] + c.n_frames)
    k = 0
    for i in sorted(indices):
        while i >= starts[k + 1]:
            k += 1
        offsets[k].append(i - starts[k])
    return offsets
